"""Fuzz every operation from the app's own OpenAPI schema (schemathesis): no input may cause a
5xx."""

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from service.app import create_app
from tests.service.conftest import make_settings

EXAMPLES = 30


def test_no_input_causes_a_server_error(tmp_path, models_template):
    # Development mode without an admin key: the fuzzer reaches every handler.
    cfg = make_settings(tmp_path, models_template, admin_api_key=None)
    app = create_app(cfg, enqueue=lambda job_id: None)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 17
    failures = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            case.call_and_validate(checks=[not_a_server_error])

        try:
            fuzz()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {exc}")
    assert failures == [], "\n\n".join(failures)

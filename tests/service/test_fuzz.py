"""Fuzz every operation from the app's own OpenAPI schema (schemathesis): no input may cause a
5xx. Also at the edges the generator rarely reaches: bodies at and just past every size limit,
and every number in a generated request replaced by a huge integer."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from service.app import create_app
from service.errors import PROBLEM
from service.limits import Limits
from tests.service.conftest import ADMIN, make_settings

EXAMPLES = 25
HUGE = "9" * 5000  # past Python's 4,300-digit limit for int(str)
SMALL = {"max_image_mb": 0.01, "max_images_per_request": 3, "max_upload_mb": 1}


def _operations(app) -> list:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def test_no_input_causes_a_server_error(tmp_path, models_template):
    # Development mode without an admin key: the fuzzer reaches every handler.
    cfg = make_settings(tmp_path, models_template, admin_api_key=None, **SMALL)
    app = create_app(cfg, enqueue=lambda job_id: None)
    operations = _operations(app)
    assert len(operations) >= 20
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


def _huge_numbers(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return "__HUGE__"
    if isinstance(value, dict):
        return {k: _huge_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_huge_numbers(v) for v in value]
    return value


def test_every_number_made_huge_causes_no_server_error(tmp_path, models_template):
    cfg = make_settings(tmp_path, models_template, admin_api_key=None, **SMALL)
    app = create_app(cfg, enqueue=lambda job_id: None)
    failures, sent = [], 0
    with TestClient(app) as client:
        for operation in _operations(app):

            @given(case=operation.as_strategy())
            @settings(max_examples=6, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def huge(case):
                nonlocal sent
                query = {k: (HUGE if isinstance(v, (int, float)) and not isinstance(v, bool)
                             else v) for k, v in (case.query or {}).items()}
                kwargs: dict[str, Any] = {"params": query}
                if case.media_type == "application/json" and case.body is not None:
                    text = json.dumps(_huge_numbers(case.body)).replace('"__HUGE__"', HUGE)
                    kwargs |= {"content": text.encode(),
                               "headers": {"content-type": "application/json"}}
                r = client.request(case.method.upper(), case.formatted_path, **kwargs)
                sent += 1
                if r.status_code >= 500:
                    failures.append(f"{case.operation.label} {r.status_code}: {r.text[:300]}")

            huge()
    assert sent >= 40
    assert failures == [], "\n".join(failures)


def _limits_cases(limits: Limits) -> list[tuple[str, str, bytes, str, str]]:
    """(name, path, body, content type, where) at exactly a limit ('at') and one past it."""
    cases = []
    for path in ("/embed", "/search", "/classify", "/train", "/datasets"):
        limit = limits.body_limit(path, "application/json")
        for where, size in (("at", limit), ("past", limit + 1)):
            body = b'{"images": []}'
            cases.append((f"{path} json", path, body + b" " * (size - len(body)),
                          "application/json", where))
    image = limits.b64_image_chars
    for where, size in (("at", image), ("past", image + 4)):
        text = base64.b64encode(b"\xff\xd8" + b"\0" * (size * 3 // 4 - 2)).decode()
        for path, extra in (("/embed", {}), ("/search", {"k": 1}), ("/classify", {"k": 1})):
            body = json.dumps({"images": [text] * limits.images} | extra).encode()
            cases.append((f"{path} b64 images", path, body, "application/json", where))
    return cases


def test_bodies_at_and_past_every_limit_cause_no_server_error(tmp_path, models_template):
    cfg = make_settings(tmp_path, models_template, **SMALL)
    app = create_app(cfg, enqueue=lambda job_id: None)
    limits = Limits.of(cfg)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with TestClient(app) as client:
        for name, path, body, ctype, where in _limits_cases(limits):
            r = client.post(path, content=body, headers=auth | {"content-type": ctype})
            assert r.status_code < 500 and r.headers["content-type"].startswith(PROBLEM), (
                name, where, r.status_code, r.text[:300])
            if where == "past":  # too large a body: 413; too long an image string: 413 or 422
                assert r.status_code in ((413, 422) if "b64" in name else (413,)), (
                    name, r.text[:300])
        image = b"\xff\xd8" + b"\0" * (limits.image_bytes - 2)
        for path in ("/embed", "/search", "/classify"):
            for files, status in (([image] * limits.images, 422),          # at: not a JPEG
                                  ([image + b"\0"], 413),                  # one byte past
                                  ([image] * (limits.images + 1), 422)):   # one file past
                r = client.post(path, files=[("files", ("a.jpg", f, "image/jpeg"))
                                             for f in files], headers=auth)
                assert r.status_code == status, (path, len(files), r.text[:300])
        upload = b"\0" * limits.upload_bytes
        for data, status in ((upload[:-4096], 422), (upload + b"\0", 413)):
            r = client.post("/datasets", data={"name": "edge"},
                            files={"file": ("a.zip", data)}, headers=auth)
            assert r.status_code == status, r.text[:300]


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deep_nesting_anywhere_causes_no_server_error(tmp_path, models_template, depth):
    cfg = make_settings(tmp_path, models_template)
    app = create_app(cfg, enqueue=lambda job_id: None)
    nested = "[" * depth + "]" * depth
    with TestClient(app) as client:
        for path in ("/embed", "/search", "/classify", "/train", "/datasets"):
            for body in (nested, '{"images": ' + nested + "}", '{"config": {"a": ' + nested
                         + "}}"):
                r = client.post(path, content=body.encode(), headers={
                    "content-type": "application/json", "Authorization": f"Bearer {ADMIN}"})
                assert 400 <= r.status_code < 500, (path, depth, r.text[:200])

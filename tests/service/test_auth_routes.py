"""Which key each route takes, checked on every route the app has (the list comes from the app:
a new route without its guard fails here), and what the open routes tell a caller without a
key."""

from __future__ import annotations

import pytest
import redis
from fastapi.testclient import TestClient

from service.app import UnsafeSettings, create_app
from service.errors import PROBLEM
from service.routing import flat_routes
from tests.conftest import CIFAR_SLICE
from tests.service.conftest import ADMIN, V1, make_settings

READ = "read-key-for-tests-0123456789"
METRICS = "metrics-key-for-tests-012345"
# Open on purpose: orchestrators probe the health routes without a key; the console's page is
# static (no data in it) and asks for the key itself.
PUBLIC = {"/healthz", "/readyz", "/"}
DOCS = {"/docs", "/redoc", "/openapi.json"}
SAMPLE_PARAMS = {"item_id:path": "train/cat/0000.jpg", "version": V1, "job_id": "abc",
                 "name": "slice", "other": V1, "collection": "cifar-slice"}


def _requests(app):
    """Every (method, url) the app answers, path parameters filled with plausible values."""
    out = []
    for route in flat_routes(app):
        url = route.path
        for name, value in SAMPLE_PARAMS.items():
            url = url.replace("{" + name + "}", value)
        assert "{" not in url, f"no sample value for a parameter of {route.path}"
        out.extend((method, url, route.path) for method in sorted(route.methods))
    return out


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, models_template):
    settings = make_settings(tmp_path_factory.mktemp("keyed"), models_template,
                             read_api_key=READ, metrics_api_key=METRICS, api_docs="key")
    app = create_app(settings, enqueue=lambda j: None)
    with TestClient(app) as client:
        yield app, client


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def test_every_route_but_the_health_probes_needs_a_key(keyed):
    app, client = keyed
    requests = _requests(app)
    assert len(requests) >= 23
    for method, url, path in requests:
        r = client.request(method, url)
        if path in PUBLIC:
            assert r.status_code in (200, 503), (method, url, r.status_code)
            continue
        assert r.status_code == 401, (method, url, r.status_code, r.text[:200])
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.headers["content-type"].startswith(PROBLEM)
        r = client.request(method, url, headers=_auth("a-wrong-key-0123456789"))
        assert r.status_code == 403, (method, url, r.status_code)


def test_each_key_opens_what_it_guards_and_nothing_else(keyed):
    app, client = keyed
    for method, url, path in _requests(app):
        if path in PUBLIC:
            continue
        mutating = method in ("POST", "PUT", "DELETE") and path.removeprefix(
            "/collections/{collection}") not in ("/embed", "/search", "/classify")
        for key in (READ, METRICS, ADMIN):
            r = client.request(method, url, headers=_auth(key))
            if key == ADMIN:
                allowed = True
            elif path == "/metrics":
                allowed = key == METRICS  # METRICS_API_KEY is set: the read key is not enough
            else:
                allowed = key == READ and not mutating
            refused = r.status_code in (401, 403)
            assert refused != allowed, (method, url, key[:4], r.status_code, r.text[:200])


def test_cancel_needs_the_admin_key(keyed):
    _, client = keyed
    with open(CIFAR_SLICE, "rb") as f:
        r = client.post("/datasets", data={"name": "canceling"}, files={"file": ("s.zip", f)},
                        headers=_auth(ADMIN))
    assert r.status_code == 201, r.text
    job = client.post("/train", json={"dataset": "canceling"}, headers=_auth(ADMIN)).json()
    assert client.delete(f"/jobs/{job['id']}").status_code == 401
    assert client.delete(f"/jobs/{job['id']}", headers=_auth(READ)).status_code == 403
    assert client.get(f"/jobs/{job['id']}", headers=_auth(READ)).json()["status"] == "queued"
    r = client.delete(f"/jobs/{job['id']}", headers=_auth(ADMIN))
    assert r.status_code == 202 and r.json()["status"] == "canceled"


def test_readiness_is_terse_without_the_read_key(keyed):
    _, client = keyed
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready", "checks": {}}
    checks = client.get("/readyz", headers=_auth(READ)).json()["checks"]
    assert checks == {"model": V1, "store": True, "broker": True}


@pytest.mark.parametrize(("settings", "expected"), [
    ({}, {None: 200}),  # nothing set: open
    ({"read_api_key": READ}, {None: 401, READ: 200, ADMIN: 200}),
    ({"read_api_key": READ, "metrics_api_key": METRICS},
     {None: 401, READ: 403, METRICS: 200, ADMIN: 200}),
    ({"metrics_api_key": METRICS}, {None: 401, METRICS: 200}),
])
def test_metrics_take_the_metrics_key_or_else_the_read_key(tmp_path, models_template,
                                                           settings, expected):
    app = create_app(make_settings(tmp_path, models_template, **settings),
                     enqueue=lambda j: None)
    with TestClient(app) as client:
        for key, status in expected.items():
            assert client.get("/metrics", headers=_auth(key)).status_code == status, key


@pytest.mark.parametrize(("mode", "expected"), [
    ("open", {None: 200}), ("key", {None: 401, READ: 200}), ("off", {None: 404, ADMIN: 404}),
])
def test_api_docs_are_open_behind_the_read_key_or_off(tmp_path, models_template, mode,
                                                      expected):
    app = create_app(make_settings(tmp_path, models_template, read_api_key=READ,
                                   api_docs=mode), enqueue=lambda j: None)
    with TestClient(app) as client:
        for key, status in expected.items():
            for url in DOCS:
                assert client.get(url, headers=_auth(key)).status_code == status, (url, key)


@pytest.mark.parametrize("variable", ["read_api_key", "metrics_api_key"])
@pytest.mark.parametrize("key", ["changeme", "secret", "short"])
def test_production_refuses_placeholder_read_and_metrics_keys(tmp_path, models_template,
                                                              variable, key):
    settings = make_settings(tmp_path, models_template, environment="production",
                             **{variable: key})
    with pytest.raises(UnsafeSettings, match=variable.upper()):
        create_app(settings)


def test_the_broker_probe_is_cached_over_one_connection(tmp_path, models_template,
                                                         redis_server):
    """/readyz used to build a Celery app and a new broker connection on every call."""
    settings = make_settings(tmp_path, models_template, broker_url=redis_server.url,
                             key_prefix="probe-test:")
    server = redis.Redis.from_url(redis_server.url)

    def connections() -> int:
        return int(server.info("stats")["total_connections_received"])

    with TestClient(create_app(settings, enqueue=lambda j: None)) as client:
        assert client.get("/readyz").json()["checks"]["broker"] is True
        before = connections()
        for _ in range(30):
            assert client.get("/readyz").status_code == 200
        assert connections() - before <= 1
        probe = client.app.state.broker_probe
        probe.cache_s = 0  # every call probes now: still the same connection
        for _ in range(10):
            assert client.get("/readyz").json()["checks"]["broker"] is True
        assert connections() - before <= 1

"""The model registry: loads happen off the event loop and never stall requests for models that
are loaded already; a broken bundle is retried with a back-off, not on every request; the cache
of pinned versions is bounded and pinned loads are rate-limited."""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.errors import PROBLEM
from tests.processes import wait_for
from tests.service.api_process import ApiProcess
from tests.service.conftest import ADMIN, V1, V2, make_settings
from trainer.bundle import set_current

ITEM = "train/ship/0001.jpg"


def _copy_version(models: Path, source: str, version: str) -> Path:
    """A bundle under another version name (the same files: valid and loadable)."""
    shutil.copytree(models / source, models / version)
    return models / version


def _write_end(fifo: Path) -> int | None:
    """The write end of a named pipe, once a reader has opened it (the loader is inside the
    load, waiting for the file's bytes); None while no reader has."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return None
        raise
    os.set_blocking(fd, True)
    return fd


def _loads(client, outcome: str = "loaded") -> float:
    text = client.get("/metrics").text
    found = re.findall(r'and_model_loads_total\{collection="[^"]*",outcome="' + outcome
                       + r'"\} ([0-9.]+)', text)
    return sum(float(n) for n in found)


@pytest.fixture(scope="module")
def server(tmp_path_factory, models_template):
    api = ApiProcess(tmp_path_factory.mktemp("registry"), models_template, dataset=False)
    yield api
    api.stop()


def test_requests_for_loaded_versions_do_not_wait_for_a_swap(server):
    """The registry held its lock while loading the new CURRENT, and pinned requests took that
    lock on the event loop: during every swap, the whole API stalled. A bundle whose
    items.json is a named pipe holds the load for as long as the test likes."""
    v3 = "20260103-000000-third"
    bundle = _copy_version(server.models, V2, v3)
    items = (bundle / "items.json").read_bytes()
    (bundle / "items.json").unlink()
    os.mkfifo(bundle / "items.json")
    with server.client(timeout=10) as c:
        assert c.get(f"/neighbours/{ITEM}", params={"model_version": V2}).status_code == 200
        set_current(server.models, v3)
        # The watcher is inside the load of v3 once it has opened its items.json, which then
        # gives nothing until the test writes it.
        pipe = wait_for(lambda: _write_end(bundle / "items.json"), 30,
                        "the watcher to start loading v3")
        for params in ({"model_version": V2}, {}, {"model_version": V1}):
            r = c.get(f"/neighbours/{ITEM}", params=params)
            assert r.status_code == 200, r.text
            assert r.json()["model_version"] == params.get("model_version", V1)
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").json()["checks"]["model"] == V1
        with os.fdopen(pipe, "wb") as f:  # let the load finish
            f.write(items)
        wait_for(lambda: c.get(f"/neighbours/{ITEM}").json()["model_version"] == v3, 30,
                 "the swap to the new version")
        assert c.get(f"/neighbours/{ITEM}", params={"model_version": V2}).status_code == 200


@pytest.mark.parametrize("damage", ["no index", "garbage encoder"])
def test_a_broken_current_bundle_is_retried_with_a_back_off(tmp_path, models_template, caplog,
                                                            damage):
    settings = make_settings(tmp_path, models_template, model_poll_s=0.1)
    broken = "20260104-000000-broken"
    bundle = _copy_version(settings.models_root, V1, broken)
    if damage == "no index":
        (bundle / "index.faiss").unlink()
    else:  # an unpickling error, which no narrow except clause expected
        (bundle / "encoder.pt").write_bytes(b"not a torch file")
    set_current(settings.models_root, broken)
    caplog.set_level(logging.ERROR, logger="service.registry")
    with TestClient(create_app(settings, enqueue=lambda j: None)) as client:
        started = time.monotonic()
        for _ in range(30):
            r = client.get(f"/neighbours/{ITEM}")
            assert r.status_code == 503 and r.headers["content-type"].startswith(PROBLEM)
            assert int(r.headers["retry-after"]) >= 1
        ready = client.get("/readyz").json()
        elapsed = time.monotonic() - started
    attempts = [m for m in caplog.messages if f"cannot load model {broken}" in m]
    # 1 s, 2 s, 4 s... between attempts, whatever the requests and the watcher (every 0.1 s)
    # ask for.
    assert 1 <= len(attempts) <= 2 + math.ceil(math.log2(elapsed + 1)), (attempts, elapsed)
    # Readiness names the failing version, never a server path or the loader's message.
    checks = {e["check"]: e["value"] for e in ready["errors"]}
    assert broken in checks["model_error"] and "/" not in checks["model_error"]
    assert str(tmp_path) not in str(ready)


def test_pinned_versions_are_cached_within_bounds_and_loads_are_rate_limited(
        tmp_path, models_template):
    settings = make_settings(tmp_path, models_template, model_cache_size=1,
                             model_loads_per_min=6)
    versions = [_copy_version(settings.models_root, V2, f"2026010{i}-000000-pin").name
                for i in (5, 6)]
    with TestClient(create_app(settings, enqueue=lambda j: None)) as client:
        assert _loads(client) == 1  # the current model
        statuses = []
        for i in range(12):
            r = client.get(f"/neighbours/{ITEM}", params={"model_version": versions[i % 2]})
            statuses.append(r.status_code)
            if r.status_code == 503:
                assert r.headers["content-type"].startswith(PROBLEM)
                assert int(r.headers["retry-after"]) >= 1
        # A burst of two loads, then one every 10 s: the cycle is answered 503, not thrashed.
        assert set(statuses) == {200, 503} and statuses[:2] == [200, 200], statuses
        assert _loads(client) <= 1 + 2 + 1, statuses
        # The current model and the cached version need no load at all.
        for _ in range(5):
            assert client.get(f"/neighbours/{ITEM}").status_code == 200


def test_a_second_cached_version_stays_loaded(tmp_path, models_template):
    settings = make_settings(tmp_path, models_template, model_cache_size=2)
    with TestClient(create_app(settings, enqueue=lambda j: None)) as client:
        third = _copy_version(settings.models_root, V2, "20260107-000000-also").name
        for _ in range(4):
            for version in (V2, third, V1):
                r = client.get(f"/neighbours/{ITEM}", params={"model_version": version})
                assert r.status_code == 200 and r.json()["model_version"] == version
        assert _loads(client) == 3


def test_a_pinned_load_waits_off_the_event_loop(tmp_path, models_template):
    """Many requests for one version that is not loaded: one load, all answered."""
    settings = make_settings(tmp_path, models_template)
    statuses: list[int] = []
    with TestClient(create_app(settings, enqueue=lambda j: None)) as client:
        def ask() -> None:
            r = client.get(f"/neighbours/{ITEM}", params={"model_version": V2})
            statuses.append(r.status_code)

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert statuses == [200] * 8
        assert _loads(client) == 2


def test_unknown_versions_are_404_without_a_load(tmp_path, models_template):
    settings = make_settings(tmp_path, models_template)
    with TestClient(create_app(settings, enqueue=lambda j: None)) as client:
        for version in ("20990101-000000-none", "x" * 128):
            r = client.get(f"/neighbours/{ITEM}", params={"model_version": version})
            assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM)
        for version in ("../models", "a\nb", "x" * 129):
            r = client.get(f"/neighbours/{ITEM}", params={"model_version": version})
            assert r.status_code == 422
        assert _loads(client) == 1


def test_promoting_a_broken_bundle_is_409_without_server_paths(tmp_path, models_template):
    settings = make_settings(tmp_path, models_template)
    broken = "20260108-000000-noindex"
    (_copy_version(settings.models_root, V2, broken) / "index.faiss").unlink()
    with TestClient(create_app(settings, enqueue=lambda j: None)) as client:
        r = client.post(f"/models/{broken}/promote", headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 409 and r.headers["content-type"].startswith(PROBLEM)
        assert str(tmp_path) not in r.text and "index.faiss" not in r.text
        assert client.get("/readyz").json()["checks"]["model"] == V1
        r = client.get(f"/neighbours/{ITEM}", params={"model_version": broken})
        assert r.status_code == 503 and str(tmp_path) not in r.text

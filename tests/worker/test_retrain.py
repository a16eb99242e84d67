"""A collection left alone with its retrain policy on retrains itself once enough of it has
changed: through the real API (its own check thread), a real worker and the promotion gate."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from state.jobs import SUCCEEDED, TERMINAL
from tests.processes import wait_for
from trainer.bundle import current_version


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "L").save(out, "PNG")
    return out.getvalue()


def _add(client: TestClient, seeds: range) -> None:
    files = [("files", (f"{n:04d}.png", _png(n), "image/png")) for n in seeds]
    r = client.post("/items", files=files, data={"prefix": "added/"})
    assert r.status_code == 201, r.text


@pytest.mark.timeout(900)
def test_a_policy_retrains_once_past_its_threshold_and_the_gate_judges_it(redis_stack):
    from service.app import create_app
    from service.settings import ServiceSettings

    stack = redis_stack
    stack.start_worker()
    first = stack.finished(stack.submit().id)
    assert first.status == SUCCEEDED, first.error
    models = stack.settings.models_root
    assert current_version(models) == first.model_version
    items = json.loads((models / first.model_version / "manifest.json").read_text())[
        "item_count"]
    threshold = 0.02  # of 1,797 items: 36 changes
    s = stack.settings
    app = create_app(ServiceSettings(
        data_root=s.data_root, models_root=s.models_root, state_root=s.state_root,
        broker_url=s.broker_url, key_prefix=s.key_prefix, device="cpu", retrain_check_s=0.2,
        allowed_hosts="testserver"),
        store=stack.store, enqueue=stack.enqueue)
    with TestClient(app) as api:
        policy = {"enabled": True, "changed_fraction": threshold,
                  "config": {"rounds": 1, "epochs_per_round": 1}}
        r = api.put("/datasets/digits/retrain", json=policy)
        assert r.status_code == 200, r.text
        assert r.json()["due"] is False and r.json()["current_version"] == first.model_version
        assert api.put("/datasets/digits/retrain",
                       json=policy | {"config": {"rounds": 0}}).status_code == 422

        # Below the threshold: the checks (every 0.2 s) start nothing.
        _add(api, range(0, 32))
        _add(api, range(32, 35))
        status = api.get("/datasets/digits/retrain").json()
        assert (status["changed"], status["items"]) == (35, items) and status["due"] is False
        assert status["changed"] < threshold * items <= status["changed"] + 1
        before = stack.store.list(0, 100)[1]
        assert app.state.retrainer.check() is None

        # One more change reaches it: the API's own check enqueues one job, and only one.
        _add(api, range(35, 36))
        job_id = wait_for(lambda: api.get("/datasets/digits/retrain").json()["last_job"], 30,
                          "the check to enqueue a retrain")
        done = stack.finished(job_id)
        assert done.status == SUCCEEDED, done.error
        assert done.config["init_from"] == first.model_version
        assert (done.config["rounds"], done.config["epochs_per_round"]) == (1, 1)
        assert stack.store.list(0, 100)[1] == before + 1

        # The gate judged it against the model it would replace, on the same items.
        assert done.gate["incumbent_name"] == f"version {first.model_version}"
        expected = done.model_version if done.gate["promoted"] else first.model_version
        assert current_version(models) == expected
        # Kept or not, nothing has changed since it started: no second retrain.
        after = api.get("/datasets/digits/retrain").json()
        assert after["changed"] == 0 and after["due"] is False and after["last_job"] == job_id
        assert app.state.retrainer.check() is None
        assert stack.store.list(0, 100)[1] == before + 1
        assert all(j.status in TERMINAL for j in stack.store.list(0, 100)[0])

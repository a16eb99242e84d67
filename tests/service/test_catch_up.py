"""Only the current version follows the change log on the model-watch thread; an older version
that a request names catches up then, on the low-priority lane, and says how far it got."""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
import zipfile
from concurrent.futures import Future

from fastapi.testclient import TestClient

from service.app import create_app
from service.batcher import BULK_NICE
from service.catch_up import CatchUpLane
from service.live_view import LiveView
from state.changes_sqlite import SqliteChangeLog
from tests.conftest import CIFAR_SLICE
from tests.processes import wait_for
from tests.service.conftest import ADMIN, V1, V2, make_settings
from trainer.bundle import Bundle

ITEM = "train/ship/0001.jpg"


def test_a_pinned_version_catches_up_on_demand_on_the_low_priority_lane(tmp_path,
                                                                        models_template):
    settings = make_settings(tmp_path, models_template, model_poll_s=0.1)
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        z.extractall(settings.data_root / "cifar-slice")
        ship = z.read("cifar10/test/ship/0001.jpg")
    admin = {"Authorization": f"Bearer {ADMIN}"}
    app = create_app(settings, enqueue=lambda j: None)
    with TestClient(app) as client:
        r = client.get(f"/neighbours/{ITEM}", params={"model_version": V2})
        assert r.status_code == 200  # V2 is loaded, V1 is current
        registry = app.state.collections.registry("cifar-slice")
        pinned = registry.peek(V2)
        embedded_on: list[tuple[str, int]] = []
        embed = pinned.bundle.model.embed_uint8

        def recording(images):
            thread = threading.current_thread()
            embedded_on.append((thread.name, os.getpriority(os.PRIO_PROCESS,
                                                            threading.get_native_id())))
            return embed(images)

        pinned.bundle.model.embed_uint8 = recording
        body = {"items": [{"id": "new/ship.jpg", "label": "ship",
                           "image": base64.b64encode(ship).decode()}]}
        r = client.post("/items", json=body, headers=admin)  # through V1, embedded by V1
        assert r.status_code == 201, r.text
        seq = r.json()["seq"]
        assert registry.current.live.applied == seq
        time.sleep(1.0)  # ten polls of the model-watch thread
        # The poll left V2 alone: nothing re-embedded with it, nothing applied to it.
        assert embedded_on == [] and pinned.live.applied == 0

        # A request naming V2 finds the item, embedded by V2 on the low-priority lane.
        r = client.get("/neighbours/new/ship.jpg", params={"model_version": V2})
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == V2 and r.headers["x-changes-seq"] == str(seq)
        assert [name for name, _ in embedded_on] == ["catch-up"]
        assert embedded_on[0][1] >= BULK_NICE
        again = pinned.bundle.model.embed_files([ship])[0]
        assert abs(float(pinned.index.vector("new/ship.jpg") @ again) - 1) < 1e-4
        r = client.get("/neighbours/new/ship.jpg")
        assert r.headers["x-model-version"] == V1 and r.headers["x-changes-seq"] == str(seq)

        # A write through V2 is visible in V2 at once, and in the current version too.
        r = client.delete("/items/new/ship.jpg", params={"model_version": V2}, headers=admin)
        assert r.status_code == 200, r.text
        assert "new/ship.jpg" not in pinned.index and pinned.live.applied == seq + 1
        r = client.get("/neighbours/new/ship.jpg", params={"model_version": V2})
        assert r.status_code == 404
        assert client.get(f"/models/{V2}/items", params={"prefix": "new/"}).headers[
            "x-changes-seq"] == str(seq + 1)
        wait_for(lambda: client.get("/neighbours/new/ship.jpg").status_code == 404, 10,
                 "the current version to apply the delete")


def test_a_catch_up_done_before_its_request_waits_does_not_stall(tmp_path, models_template):
    """A catch-up with nothing to apply can finish before the request that asked for it
    registers its callback; the callback then runs at once, in the request's thread, and
    must not wait for the lane's lock that thread holds."""
    log = SqliteChangeLog(tmp_path / "jobs.sqlite3")
    view = LiveView(Bundle.load(models_template, V2, device="cpu"), log, tmp_path)
    lane = CatchUpLane(max_age_s=60, nice=BULK_NICE)

    def at_once(fn, *args):  # as if the lane thread had run it before submit returned
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    lane._thread.submit = at_once
    finished = threading.Event()

    def ask() -> None:
        asyncio.run(lane.caught_up(view, force=True))
        finished.set()

    threading.Thread(target=ask, daemon=True).start()
    assert finished.wait(30), "the request never got its answer"
    assert lane.fresh(view)

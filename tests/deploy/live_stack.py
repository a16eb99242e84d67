"""One stack of real processes (API and worker, on Redis or on the embedded default) shared by
the live-collection and the many-collections tests of a session: one training per broker."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.conftest import CIFAR_SLICE
from tests.processes import Process, start_api, start_worker, stop_all, wait_for

KEY = "live-admin-key-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {KEY}"}
POLL_S = 0.3
TINY = {"backbone": "small_cnn", "image_size": 16, "rounds": 1, "epochs_per_round": 1,
        "batch_size": 32, "knn_k": 10, "num_workers": 0}


def picture(seed: int, shift: int = 0) -> bytes:
    """A distinct 32x32 picture (coloured shapes on a coloured ground); `shift` brightens it a
    little: the slightly altered copy a user searches with."""
    rng = random.Random(seed)
    image = Image.new("RGB", (32, 32), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = rng.randrange(24), rng.randrange(24)
        box = (x, y, x + rng.randrange(4, 14), y + rng.randrange(4, 14))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    if shift:
        image = Image.fromarray(np.clip(np.asarray(image, np.int16) + shift, 0, 255).astype(
            np.uint8))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


class Stack:
    """API process(es) and a worker on one data folder and one store."""

    def __init__(self, root: Path, broker_url: str | None) -> None:
        self.root = root
        self.env = {**os.environ, "DATA_ROOT": str(root / "data"),
                    "MODELS_ROOT": str(root / "models"), "STATE_ROOT": str(root / "state"),
                    "ADMIN_API_KEY": KEY, "KEY_PREFIX": f"live-{os.getpid()}-{id(self)}:",
                    "MODEL_POLL_S": str(POLL_S), "HEARTBEAT_S": "0.5", "LEASE_S": "5",
                    # The routes at the root serve `slice` when a second collection comes.
                    "DEFAULT_COLLECTION": "slice", "PYTHONUNBUFFERED": "1"}
        self.env.pop("BROKER_URL", None)
        if broker_url:
            self.env["BROKER_URL"] = broker_url
        self.apis: list[tuple[Process, str]] = []
        self.worker = start_worker(self.env, root / "worker.log")

    def start_api(self, **env: str) -> str:
        """Another API process on the stack's folders and store (`env`: settings of its own)."""
        proc, url = start_api(self.env | env, self.root / f"api{len(self.apis)}.log")
        self.apis.append((proc, url))
        return url

    def stop_api(self, url: str) -> None:
        for proc, u in self.apis:
            if u == url:
                proc.stop()

    def kill_api(self, url: str) -> None:
        for proc, u in self.apis:
            if u == url:
                proc.kill9()

    def stop(self) -> None:
        stop_all([self.worker, *(proc for proc, _ in self.apis)])


def train(c: httpx.Client, dataset: str = "slice", **config) -> str:
    r = c.post("/train", json={"dataset": dataset, "config": TINY | config, "promote": "always"},
               headers=ADMIN)
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    job = wait_for(lambda: (j := c.get(location).json())["status"] in (
        "succeeded", "failed", "canceled") and j, 300, "the job to end")
    assert job["status"] == "succeeded", job
    return job["model_version"]


def serving(c: httpx.Client, version: str) -> None:
    wait_for(lambda: c.get("/readyz").json().get("checks", {}).get("model") == version, 60,
             f"the API to serve {version}")


@pytest.fixture(scope="session", params=["redis", "embedded"])
def live_stack(request, tmp_path_factory):
    url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    s = Stack(tmp_path_factory.mktemp(f"live-{request.param}"), url)
    try:
        api = s.start_api()
        with httpx.Client(base_url=api, timeout=120) as c, open(CIFAR_SLICE, "rb") as f:
            r = c.post("/datasets", data={"name": "slice"}, files={"file": ("s.zip", f)},
                       headers=ADMIN)
            assert r.status_code == 201, r.text
            s.version = train(c)
            serving(c, s.version)
        s.api = api
        s.kind = request.param
        yield s
    finally:
        s.stop()



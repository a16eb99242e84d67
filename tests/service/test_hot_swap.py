"""Swapping the current model under continuous load: no request fails, none mixes versions."""

import threading
import time
import zipfile

import httpx
import numpy as np
import pytest
import uvicorn

from service.app import create_app
from tests.processes import free_port, wait_for
from tests.service.conftest import ADMIN, V1, V2, make_settings
from trainer.bundle import Bundle

ITEM = "train/ship/0001.jpg"


@pytest.fixture()
def server(tmp_path, models_template):
    settings = make_settings(tmp_path, models_template, model_poll_s=0.05)
    port = free_port()
    config = uvicorn.Config(create_app(settings, enqueue=lambda j: None), host="127.0.0.1",
                            port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    wait_for(lambda: srv.started, 30, "uvicorn to start")
    yield f"http://127.0.0.1:{port}", settings
    srv.should_exit = True
    thread.join(10)


def test_swap_under_load(server, cifar_zip):
    url, settings = server
    with zipfile.ZipFile(cifar_zip) as z:
        image = z.read("cifar10/test/truck/0002.jpg")
    expected = {}
    for v in (V1, V2):
        b = Bundle.load(settings.models_root, v, device="cpu")
        vec = b.model.embed_files([image])[0]
        _, rows = b.index.search(b.vectors[b.row_of[ITEM]][None], 6)
        expected[v] = (vec, [b.ids[r] for r in rows[0] if b.ids[r] != ITEM][:5])
    assert float(expected[V1][0] @ expected[V2][0]) < 0.98  # the versions differ

    failures, seen = [], {V1: 0, V2: 0}
    stop = threading.Event()

    def hammer(kind: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                try:
                    if kind == "embed":
                        r = c.post("/embed", files=[("files", ("q.jpg", image, "image/jpeg"))])
                    else:
                        r = c.get(f"/neighbours/{ITEM}", params={"k": 5})
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                    continue
                body = r.json()
                version = body["model_version"]
                vec, neighbours = expected[version]
                if kind == "embed":
                    got = np.asarray(body["embeddings"][0])
                    other = expected[V2 if version == V1 else V1][0]
                    if not (got @ vec > 0.99 and got @ vec > got @ other):
                        failures.append(f"embedding does not match {version}")
                elif [n["id"] for n in body["neighbours"]] != neighbours:
                    failures.append(f"neighbours do not match {version}")
                seen[version] += 1

    threads = [threading.Thread(target=hammer, args=(k,)) for k in ["embed"] * 3 + ["nb"] * 3]
    for t in threads:
        t.start()
    with httpx.Client(base_url=url, timeout=60) as admin:
        for version in (V2, V1, V2, V1, V2):
            time.sleep(0.4)
            r = admin.post(f"/models/{version}/promote",
                           headers={"Authorization": f"Bearer {ADMIN}"})
            assert r.status_code == 200, r.text
    time.sleep(0.4)
    stop.set()
    for t in threads:
        t.join(30)
    assert failures == []
    assert seen[V1] > 10 and seen[V2] > 10

"""Swapping the current model under continuous load, the way production swaps it: a worker
writes a new bundle and moves CURRENT (trainer/bundle.py, as worker/publish.py does). Every
swap publishes a version never loaded before, one of them broken. No request fails, every
answer comes whole from one published version, and the broken one is never served."""

import threading
import zipfile
from collections import Counter

import httpx
import numpy as np
import pytest
import uvicorn

from service.app import create_app
from tests.processes import free_port, wait_for
from tests.service.conftest import V1, V2, make_settings
from trainer.bundle import Bundle, set_current, write_bundle

ITEM = "train/ship/0001.jpg"
KINDS = ("embed", "neighbours")


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


def _model_error(url: str) -> str | None:
    body = httpx.get(f"{url}/readyz", timeout=10).json()
    checks = body.get("checks") or {e["check"]: e["value"] for e in body.get("errors", [])}
    return checks.get("model_error")


def test_swap_under_load(server, trained_runs, cifar_zip):
    url, settings = server
    root = settings.models_root
    with zipfile.ZipFile(cifar_zip) as z:
        image = z.read("cifar10/test/truck/0002.jpg")
    # What each run answers; every version published from a run answers the same.
    expected = {}
    for run in (V1, V2):
        b = Bundle.load(root, run, device="cpu")
        vec = b.model.embed_files([image])[0]
        _, rows = b.index.search(b.vectors[b.row_of[ITEM]][None], 6)
        expected[run] = (vec, [b.ids[r] for r in rows[0] if b.ids[r] != ITEM][:5])
    assert float(expected[V1][0] @ expected[V2][0]) < 0.98  # the runs differ

    published = {V1: V1}  # version -> the run it was published from; set before CURRENT moves
    broken = "20260301-000000-broken"
    failures: list[str] = []
    seen: Counter[tuple[str, str]] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def check(kind: str, r: httpx.Response) -> str:
        assert r.status_code == 200, f"{r.status_code} {r.text[:200]}"
        body = r.json()
        version = body["model_version"]
        assert version != broken, "the broken bundle was served"
        assert version in published, f"answered by {version!r}, never published"
        vec, neighbours = expected[published[version]]
        if kind == "embed":
            got = np.asarray(body["embeddings"][0])
            other = expected[V2 if published[version] == V1 else V1][0]
            assert got @ vec > 0.99 and got @ vec > got @ other, f"embedding is not {version}'s"
        else:
            got = [n["id"] for n in body["neighbours"]]
            assert got == neighbours, f"neighbours are not {version}'s: {got}"
        return version

    def hammer(kind: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            while not stop.is_set():
                # Any exception at all is a failure: a dead client thread must not read as
                # "no failures".
                try:
                    if kind == "embed":
                        r = c.post("/embed", files=[("files", ("q.jpg", image, "image/jpeg"))])
                    else:
                        r = c.get(f"/neighbours/{ITEM}", params={"k": 5})
                    version = check(kind, r)
                except Exception as exc:
                    with lock:
                        failures.append(f"{kind}: {exc!r}")
                    continue
                with lock:
                    seen[kind, version] += 1

    def served_by_both(version: str) -> bool:
        with lock:
            return all(seen[kind, version] for kind in KINDS) or bool(failures)

    threads = [threading.Thread(target=hammer, args=(k,)) for k in KINDS * 3]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: served_by_both(V1), 60, f"{V1} to be served")
        for i, run in enumerate((V2, V1, "broken", V2, V1)):
            if run == "broken":
                # A bundle that passed its checks when written and is damaged before it is
                # loaded: CURRENT names it, the API must keep serving the last good version.
                write_bundle(trained_runs[V2], root, dataset="cifar-slice", version=broken,
                             extra={"job_id": None})
                (root / broken / "encoder.pt").write_bytes(b"not a torch file")
                set_current(root, broken)
                wait_for(lambda: broken in (_model_error(url) or ""), 60,
                         "the API to refuse the broken bundle")
                continue
            version = f"2026020{i}-000000-swap{i}"
            write_bundle(trained_runs[run], root, dataset="cifar-slice", version=version,
                         extra={"job_id": None})
            published[version] = run
            set_current(root, version)
            wait_for(lambda v=version: served_by_both(v), 60, f"{version} to be served")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    served = {version for _, version in seen}
    assert served == set(published), (served, set(published))

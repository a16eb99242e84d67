"""The processes the compose file starts (API, worker), here, driven through HTTP only:
upload -> train -> progress -> published -> embed -> neighbours -> classify."""

from __future__ import annotations

import base64
import contextlib
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.processes import (
    REPO,
    Process,
    discard_all,
    free_port,
    start_api,
    start_worker,
    wait_for,
)

KEY = "e2e-admin-key-0123456789abcdef"


def _env(tmp_path: Path, broker_url: str | None) -> dict[str, str]:
    env = {**os.environ, "DATA_ROOT": str(tmp_path / "data"),
           "MODELS_ROOT": str(tmp_path / "models"), "STATE_ROOT": str(tmp_path / "state"),
           "ADMIN_API_KEY": KEY, "ENVIRONMENT": "production", "KEY_PREFIX": "e2e:",
           # The test reads without a key: production with open reads, chosen explicitly.
           "ALLOW_OPEN_READS": "true",
           "MODEL_POLL_S": "0.3", "HEARTBEAT_S": "0.5", "LEASE_S": "5",
           "PYTHONUNBUFFERED": "1"}
    env.pop("BROKER_URL", None)
    if broker_url:
        env["BROKER_URL"] = broker_url
    return env


@pytest.fixture(params=["redis", "embedded"])
def stack(request, tmp_path):
    url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    env = _env(tmp_path, url)
    api, base = start_api(env, tmp_path / "api.log")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        yield base, (api, worker)
    finally:
        discard_all([worker, api])


def _zip_of(folder: Path, tmp: Path) -> Path:
    return Path(shutil.make_archive(str(tmp / "upload"), "zip", folder))


def test_full_flow_through_http(stack, digits_dir, tmp_path):
    base, procs = stack
    admin = {"Authorization": f"Bearer {KEY}"}
    c = httpx.Client(base_url=base, timeout=120)
    assert c.get("/readyz").status_code == 503  # no model yet: not ready, and says so

    with open(_zip_of(digits_dir, tmp_path), "rb") as f:
        r = c.post("/datasets", data={"name": "digits"}, files={"file": ("d.zip", f)},
                   headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["items"] == 1797

    r = c.post("/train", json={"dataset": "digits", "promote": "always", "config": {
        "backbone": "small_cnn", "image_size": 16, "rounds": 2, "epochs_per_round": 2,
        "knn_k": 20}},
        headers=admin)
    assert r.status_code == 202, r.text
    location = r.headers["location"]

    progress_seen = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = c.get(location).json()
        if job["status"] == "running" and "epoch" in job["progress"]:
            progress_seen.append(job["progress"]["global_epoch"])
        if job["status"] in ("succeeded", "failed", "canceled"):
            break
        time.sleep(0.3)
    assert job["status"] == "succeeded", (job, procs[1].tail())
    assert progress_seen, "no progress was visible while the job ran"
    version = job["model_version"]
    assert len(c.get(f"{location}/progress").json()["epochs"]) == 4

    wait_for(lambda: c.get("/readyz").json().get("checks", {}).get("model") == version, 30,
             "the API to serve the new model")
    manifest = c.get(f"/models/{version}").json()
    assert manifest["item_count"] == 1797 and manifest["current"]

    image = next((digits_dir / "test" / "7").iterdir()).read_bytes()
    r = c.post("/embed", files=[("files", ("x.png", image, "image/png"))])
    assert r.status_code == 200 and r.json()["model_version"] == version
    vector = r.json()["embeddings"][0]
    assert len(vector) == 128

    item = "train/7/0007.png"
    r = c.get(f"/neighbours/{item}", params={"k": 20})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == version and body["id"] == item
    neighbours = body["neighbours"]
    ids = [n["id"] for n in neighbours]
    assert len(ids) == len(set(ids)) == 20 and item not in ids  # never its own neighbour
    scores = [n["score"] for n in neighbours]
    assert scores == sorted(scores, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in scores)
    # Each neighbour carries its own label (the folder it came from).
    assert all(n["label"] == n["id"].split("/")[1] for n in neighbours)

    # Classifying the item: the vote of those 20 neighbours (its own label left out).
    r = c.post("/classify", json={"ids": [item], "k": 20, "sigma": 0.1})
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == version
    assert_weighted_vote(r.json()["predictions"][0], neighbours, 0.1)

    # Classifying an image: the vote of the image's 20 nearest items.
    r = c.post("/search", json={"vectors": [vector], "k": 20})
    assert r.status_code == 200 and r.json()["model_version"] == version, r.text
    nearest = r.json()["results"][0]["neighbours"]
    r = c.post("/classify", json={"images": [base64.b64encode(image).decode()], "k": 20,
                                  "sigma": 0.1})
    assert r.status_code == 200 and r.json()["model_version"] == version, r.text
    assert_weighted_vote(r.json()["predictions"][0], nearest, 0.1)
    r = c.post("/classify", files=[("files", ("x.png", image, "image/png"))])
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] in map(str, range(10))


def assert_weighted_vote(prediction: dict, neighbours: list[dict], sigma: float) -> None:
    """A prediction is the weighted vote exp(score / sigma) of the neighbours' labels."""
    votes: dict[str, float] = {}
    for n in neighbours:
        votes[n["label"]] = votes.get(n["label"], 0.0) + math.exp(n["score"] / sigma)
    total = sum(votes.values())
    shares = {label: v / total for label, v in votes.items()}
    assert prediction["label"] == max(shares, key=shares.get), (prediction, shares)
    got = {label: s for label, s in prediction["scores"].items() if s > 1e-6}
    assert got.keys() == shares.keys(), (got, shares)
    assert all(abs(got[label] - shares[label]) < 1e-3 for label in shares), (got, shares)


# A bundle of known vectors: "query" is e0, and every other item lies at a chosen cosine score
# from it. Its 4 nearest voters: one of class a, close; three of class b, farther. Counted,
# b wins 3 to 1; weighted by exp(score / sigma), a wins at sigma 0.1 and b at sigma 1.
FIXED_ITEMS = [("query", "a", 1.0), ("a-near", "a", 0.9), ("b-1", "b", 0.6),
               ("b-2", "b", 0.55), ("b-3", "b", 0.5), ("c-far", "c", -0.5)]
FIXED_VERSION = "20260101-000000-fixed"


def _fixed_bundle(models: Path, tmp: Path) -> None:
    """FIXED_ITEMS published as the current model by the real bundle code, with a real FAISS
    index; the encoder is an untrained one of the right size (no query here embeds an
    image)."""
    import json

    import numpy as np

    from trainer.backbones import Encoder
    from trainer.bundle import set_current, write_bundle
    from trainer.encoder_file import EncoderMeta, save_encoder

    dim = len(FIXED_ITEMS) + 1
    run = tmp / "fixed-run"
    run.mkdir()
    save_encoder(run / "encoder.pt", Encoder("small_cnn", dim),
                 EncoderMeta("small_cnn", dim, 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    (run / "config.json").write_text(json.dumps({"backbone": "small_cnn", "index": "flat"}))
    (run / "metrics.json").write_text("{}")
    vectors = np.zeros((len(FIXED_ITEMS), dim), dtype=np.float32)
    for row, (_, _, score) in enumerate(FIXED_ITEMS):
        # Unit vectors at cosine `score` from e0, each off-axis part on an axis of its own.
        vectors[row, 0], vectors[row, row + 1] = score, math.sqrt(1 - score ** 2)
    classes = sorted({label for _, label, _ in FIXED_ITEMS})
    np.savez(run / "embeddings.npz", vectors=vectors, ids=[i for i, _, _ in FIXED_ITEMS],
             labels=[classes.index(label) for _, label, _ in FIXED_ITEMS], classes=classes)
    write_bundle(run, models, dataset="fixed", version=FIXED_VERSION, extra={"job_id": None})
    set_current(models, FIXED_VERSION)


def test_classify_is_the_weighted_vote_of_known_neighbours(tmp_path):
    """The served API on a bundle whose neighbour scores differ widely: each sigma gives the
    shares computed here by hand, and the two give different labels."""
    env = {**_env(tmp_path, None), "ENVIRONMENT": "development"}
    env.pop("ADMIN_API_KEY")
    _fixed_bundle(tmp_path / "models", tmp_path)
    port = free_port()
    api = Process([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
                  env, tmp_path / "api.log")
    try:
        c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

        def ready() -> bool:
            try:
                return c.get("/readyz").json().get("checks", {}).get("model") == FIXED_VERSION
            except (httpx.HTTPError, ValueError):
                return False

        wait_for(ready, 120, "the API to serve the fixed model")
        r = c.get("/neighbours/query", params={"k": 4})
        assert r.status_code == 200, r.text
        neighbours = r.json()["neighbours"]
        assert [(n["id"], n["label"]) for n in neighbours] == [
            ("a-near", "a"), ("b-1", "b"), ("b-2", "b"), ("b-3", "b")]
        assert [n["score"] for n in neighbours] == pytest.approx([0.9, 0.6, 0.55, 0.5],
                                                                 abs=1e-6)
        # By hand: a = e^9 / (e^9 + e^6 + e^5.5 + e^5), b the rest; c has no voter among 4.
        # sigma 1: a = e^0.9 / (e^0.9 + e^0.6 + e^0.55 + e^0.5).
        expected = {0.1: ("a", 0.9105), 1.0: ("b", 0.6791)}
        for sigma, (label, share) in expected.items():
            r = c.post("/classify", json={"ids": ["query"], "k": 4, "sigma": sigma})
            assert r.status_code == 200, r.text
            assert r.json()["sigma"] == sigma
            prediction = r.json()["predictions"][0]
            assert prediction["label"] == label, (sigma, prediction)
            assert prediction["scores"][label] == pytest.approx(share, abs=1e-4), (sigma,
                                                                                   prediction)
            assert prediction["scores"]["c"] == 0.0
            assert_weighted_vote(prediction, neighbours, sigma)
    finally:
        api.stop()


def _pids(output: str) -> list[int]:
    return [int(p) for p in re.findall(r"\(pid (\d+)\)", output)]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie awaiting its parent's wait() is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_one_command_run_trains_publishes_and_stops_everything(tmp_path):
    env = {**os.environ, "AND_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    for k in ("BROKER_URL", "DATA_ROOT", "MODELS_ROOT", "STATE_ROOT", "ADMIN_API_KEY"):
        env.pop(k, None)
    r = subprocess.run([sys.executable, "-m", "deploy.local_stack", "--port", str(free_port()),
                        "--exit-when-done", "--set", "rounds=2", "epochs_per_round=1",
                        "image_size=16",
                        "--promote", "always"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is published and current" in r.stdout and "curl" in r.stdout
    # Two epochs rarely beat raw pixels beyond the noise: current by choice, the verdict shown.
    assert "promotion gate (always): knn_top1 " in r.stdout and "raw pixels" in r.stdout
    lines = r.stdout.splitlines()
    # The console's address comes first; the demo data are the photo patches; the last word is
    # the model's kNN accuracy beside that of raw pixels.
    assert lines[0].startswith("Console: http://127.0.0.1:"), lines[0]
    assert "2000 images, 8 classes" in r.stdout
    assert re.fullmatch(r"Weighted kNN top-1 on the labelled test images: model \d+\.\d %, "
                        r"raw pixels \d+\.\d % .*", lines[-2]), lines[-3:]
    pids = _pids(r.stdout)
    assert len(pids) == 2 and all(_gone(p) for p in pids)


def _descendants(ancestor: int) -> set[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rindex(b")") + 2:].split()[1])
    found, frontier = set(), {ancestor}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_ctrl_c_stops_every_process(tmp_path):
    """Ctrl-C while a job trains: the API, the worker, its Celery pool child and the job's
    training process are all gone afterwards."""
    from worker.tasks import job_processes

    env = {**os.environ, "AND_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    for k in ("BROKER_URL", "DATA_ROOT", "MODELS_ROOT", "STATE_ROOT", "ADMIN_API_KEY"):
        env.pop(k, None)
    proc = subprocess.Popen([sys.executable, "-m", "deploy.local_stack", "--port",
                             str(free_port()), "--set", "rounds=1", "epochs_per_round=1000"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    output: list[str] = []

    def read_until(predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"{what}: {''.join(output)}")
            output.append(line)

    every: set[int] = set()
    worker_pid = 0
    try:
        read_until(lambda: len(_pids("".join(output))) == 2, 120, "no process ids printed")
        worker_pid, api_pid = _pids("".join(output))
        every = {worker_pid, api_pid}
        jobs = wait_for(lambda: job_processes(worker_pid), 300, "the job's training process")
        pool = _descendants(worker_pid) - set(jobs)
        assert pool, "no Celery pool child under the worker"
        every = {proc.pid, worker_pid, api_pid, *pool, *jobs, *_descendants(api_pid)}
        proc.send_signal(signal.SIGINT)
        read_until(lambda: output and "stopped the API and the worker" in output[-1], 90,
                   "the stack did not stop")
        assert proc.wait(30) == 0, "".join(output)
    finally:
        if proc.poll() is None:
            proc.kill()
        left = sorted(p for p in every | _descendants(worker_pid or proc.pid) if not _gone(p))
        # A stack left behind would train for an hour beside the rest of the suite.
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not left, f"still running after Ctrl-C: {left}"

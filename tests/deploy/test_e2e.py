"""The processes the compose file starts (API, worker), here, driven through HTTP only:
upload -> train -> progress -> published -> embed -> neighbours -> classify."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.processes import REPO, Process, free_port, start_worker, wait_for

KEY = "e2e-admin-key-0123456789abcdef"


def _env(tmp_path: Path, broker_url: str | None) -> dict[str, str]:
    env = {**os.environ, "DATA_ROOT": str(tmp_path / "data"),
           "MODELS_ROOT": str(tmp_path / "models"), "STATE_ROOT": str(tmp_path / "state"),
           "ADMIN_API_KEY": KEY, "ENVIRONMENT": "production", "KEY_PREFIX": "e2e:",
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
    port = free_port()
    api = Process([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
                  env, tmp_path / "api.log")
    worker = start_worker(env, tmp_path / "worker.log")
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 120, "the API to answer")
        yield base, (api, worker)
    finally:
        worker.stop()
        api.stop()


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

    r = c.post("/train", json={"dataset": "digits", "config": {
        "backbone": "small_cnn", "rounds": 2, "epochs_per_round": 2, "knn_k": 20}},
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
    assert len(r.json()["embeddings"][0]) == 128

    r = c.get("/neighbours/train/7/0007.png", params={"k": 5})
    assert r.status_code == 200, r.text
    assert len(r.json()["neighbours"]) == 5

    r = c.post("/classify", json={"ids": ["train/7/0007.png"], "k": 20})
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] in map(str, range(10))
    r = c.post("/classify", files=[("files", ("x.png", image, "image/png"))])
    assert r.status_code == 200


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
    r = subprocess.run([sys.executable, "deploy/local_stack.py", "--port", str(free_port()),
                        "--exit-when-done", "--set", "rounds=2", "epochs_per_round=1"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is published and current" in r.stdout and "curl" in r.stdout
    lines = r.stdout.splitlines()
    # The console's address comes first; the demo data are the photo patches; the last word is
    # the model's kNN accuracy beside that of raw pixels.
    assert lines[0].startswith("Console: http://127.0.0.1:"), lines[0]
    assert "2000 images, 8 classes" in r.stdout
    assert re.fullmatch(r"Weighted kNN top-1 on the labelled test images: model \d+\.\d %, "
                        r"raw pixels \d+\.\d % .*", lines[-2]), lines[-3:]
    pids = _pids(r.stdout)
    assert len(pids) == 2 and all(_gone(p) for p in pids)


def test_ctrl_c_stops_every_process(tmp_path):
    env = {**os.environ, "AND_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    for k in ("BROKER_URL", "DATA_ROOT", "MODELS_ROOT", "STATE_ROOT", "ADMIN_API_KEY"):
        env.pop(k, None)
    proc = subprocess.Popen([sys.executable, "deploy/local_stack.py", "--port",
                             str(free_port()), "--no-train"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "Press Ctrl-C" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    output = "".join(lines) + rest
    assert proc.returncode == 0, output
    assert "stopped the API and the worker" in output
    assert all(_gone(p) for p in _pids(output))

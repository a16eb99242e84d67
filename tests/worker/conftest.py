from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from state.jobs import TERMINAL, Job, JobStore
from state.settings import Settings
from state.stores import open_store
from tests.processes import Process, discard_all, start_worker, stop_all, wait_for

MAP_POINTS = 500
SMALL = {"backbone": "small_cnn", "image_size": 16, "rounds": 2, "epochs_per_round": 1,
         "batch_size": 128, "knn_k": 20, "num_workers": 0}


@dataclass
class Stack:
    """DATA_ROOT / MODELS_ROOT / STATE_ROOT of one test, its settings and its workers."""

    root: Path
    env: dict[str, str]
    settings: Settings
    workers: list[Process] = field(default_factory=list)

    @property
    def store(self) -> JobStore:
        return open_store(self.settings)

    def start_worker(self, **env: str) -> Process:
        """A worker process; `env` adds or overrides its settings (e.g. MAX_ATTEMPTS="1")."""
        log = self.root / f"worker{len(self.workers)}.log"
        proc = start_worker(self.env | env, log)
        self.workers.append(proc)
        return proc

    def enqueue(self, job_id: str) -> None:
        from worker.app import TRAIN_TASK, make_celery

        make_celery(self.settings).send_task(TRAIN_TASK, args=[job_id],
                                             queue=self.settings.gpu_queue)

    def submit(self, dataset: str = "digits", promote: str = "always", **config) -> Job:
        """A job; its model is made current whatever the promotion gate measures, unless
        `promote` says otherwise (a test budget rarely beats raw pixels on digits)."""
        from worker.submit import submit

        return submit(self.store, self.settings, self.enqueue, dataset, SMALL | config,
                      promote)

    def wait(self, job_id: str, predicate, timeout: float = 300, what: str = "") -> Job:
        def check():
            job = self.store.get(job_id)
            return job if job is not None and predicate(job) else None

        try:
            return wait_for(check, timeout, what or f"job {job_id}")
        except AssertionError:
            logs = "\n".join(w.tail() for w in self.workers)
            raise AssertionError(f"{what}: job is {self.store.get(job_id)}\n{logs}") from None

    def api(self):
        """The real API app on this stack's store and queue, as an HTTP client (admin routes
        open: no key is set)."""
        from fastapi.testclient import TestClient

        from service.app import create_app
        from service.settings import ServiceSettings

        s = self.settings
        return TestClient(create_app(
            ServiceSettings(data_root=s.data_root, models_root=s.models_root,
                            state_root=s.state_root, broker_url=s.broker_url,
                            key_prefix=s.key_prefix, device="cpu",
                            allowed_hosts="testserver"),
            store=self.store, enqueue=self.enqueue))

    def finished(self, job_id: str, timeout: float = 400) -> Job:
        return self.wait(job_id, lambda j: j.status in TERMINAL, timeout, "job to finish")

    def stop(self) -> None:
        stop_all(self.workers)

    def discard(self) -> None:
        discard_all(self.workers)


def make_stack(tmp_path: Path, digits_dir: Path, broker_url: str | None) -> Stack:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(digits_dir, data / "digits")
    env = {
        **os.environ,
        "DATA_ROOT": str(data), "MODELS_ROOT": str(tmp_path / "models"),
        "STATE_ROOT": str(tmp_path / "state"), "KEY_PREFIX": f"test-{uuid.uuid4().hex[:8]}:",
        # A lease of 13 heartbeats: a worker killed or paused here is noticed within seconds,
        # and one busy moment of a loaded 2-core machine (a live job process once went 2 s
        # without a renewal in the whole suite) does not count as a lost worker.
        "HEARTBEAT_S": "0.3", "LEASE_S": "4", "SWEEP_INTERVAL_S": "0.5",
        # A map of a sample of the digits' 1,797 items: its t-SNE takes 1.4 s instead of 5.5,
        # and each job here publishes a bundle; what a full map holds is tested in
        # tests/trainer and tests/service.
        "MAP_POINTS": str(MAP_POINTS), "PYTHONUNBUFFERED": "1",
    }
    env.pop("BROKER_URL", None)
    if broker_url:
        env["BROKER_URL"] = broker_url
    settings = Settings(**{k.lower(): v for k, v in env.items() if k in (
        "DATA_ROOT", "MODELS_ROOT", "STATE_ROOT", "KEY_PREFIX", "HEARTBEAT_S", "LEASE_S",
        "SWEEP_INTERVAL_S", "BROKER_URL", "MAP_POINTS")})
    settings.ensure_dirs()
    return Stack(tmp_path, env, settings)


@pytest.fixture(params=["redis", "embedded"])
def stack(request, tmp_path, digits_dir):
    url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    s = make_stack(tmp_path, digits_dir, url)
    yield s
    s.discard()


@pytest.fixture()
def redis_stack(tmp_path, digits_dir, redis_server):
    s = make_stack(tmp_path, digits_dir, redis_server.url)
    yield s
    s.discard()


@pytest.fixture()
def restartable_redis(tmp_path):
    """A redis-server of this test's own that keeps its data (append-only file) across
    `stop()` and `start()`, as production's Redis does."""
    from tests.processes import RedisServer

    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder, persistent=True)
    yield server
    if server.proc.poll() is None:
        server.stop()


# With a tiny dataset: 16 x 16 model inputs, every epoch one small batch.
TINY = {"image_size": 16}


def write_tiny_dataset(data_root: Path, name: str = "tiny.npz", train: int = 24,
                       test: int = 8) -> str:
    """A labelled .npz of `train` + `test` random 8x8 images in 4 classes. Trained with SMALL
    | TINY, every epoch is one small batch, so a job of many epochs stays short and its epochs
    end often (tests that act between epochs do not depend on the machine's speed)."""
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(data_root / name,
             x_train=rng.integers(0, 256, (train, 8, 8), dtype=np.uint8),
             y_train=rng.integers(0, 4, train), x_test=rng.integers(0, 256, (test, 8, 8),
                                                                   dtype=np.uint8),
             y_test=rng.integers(0, 4, test))
    return name

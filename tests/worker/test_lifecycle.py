"""Jobs that cannot finish end with their reason, and jobs nobody would run are run: through
real Celery worker processes on a real Redis."""

import os
import signal
import time

import numpy as np
import torch

from state.jobs import CANCELED, FAILED, QUEUED, RUNNING, SUCCEEDED, Job
from tests.processes import wait_for
from tests.worker.conftest import SMALL, TINY, write_tiny_dataset
from trainer.bundle import current_version, list_versions
from worker.tasks import job_processes

WIDE_EVAL_ITEMS = 5_000


def _leftover(root, name: str, age_s: float):
    path = root / name
    path.mkdir(parents=True)
    (path / "encoder.pt").write_bytes(b"half a bundle")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_a_lost_message_is_sent_again_and_a_dead_training_process_fails_only_its_job(
        redis_stack):
    stack = redis_stack
    models = stack.settings.models_root
    old = _leftover(models, ".tmp-20250101-000000-abcdef12-0a1b2c", 2 * 3600)
    young = _leftover(models, ".tmp-20250101-000000-abcdef12-3d4e5f", 60)
    tiny = write_tiny_dataset(stack.settings.data_root)
    # A queued job whose message never reached the broker.
    lost = stack.store.create(Job.new(tiny, SMALL | TINY | {"rounds": 1,
                                                            "epochs_per_round": 10_000}))
    worker = stack.start_worker(RESEND_QUEUED_AFTER_S="1")
    running = stack.wait(lost.id, lambda j: j.status == RUNNING, 120,
                         "the job whose message was lost to run")
    assert running.attempts == 1
    assert not old.exists() and young.exists()  # swept at start: only what is over an hour old
    nxt = stack.submit(tiny, **TINY)
    # The training process dies (as the kernel's OOM killer would kill it); the worker lives.
    pids = wait_for(lambda: job_processes(worker.proc.pid), 60, "the job process")
    os.kill(pids[0], signal.SIGKILL)
    dead = stack.finished(lost.id, 60)
    assert dead.status == FAILED, dead
    assert dead.error.startswith("the training process was killed by signal 9")
    assert dead.model_version is None
    done = stack.finished(nxt.id)
    assert done.status == SUCCEEDED, done.error
    assert done.started_at >= dead.finished_at and worker.alive()
    assert current_version(models) == done.model_version


def test_a_job_lost_max_attempts_times_fails_and_the_time_limit_stops_with_a_checkpoint(
        redis_stack):
    stack = redis_stack
    tiny = write_tiny_dataset(stack.settings.data_root)
    first = stack.start_worker(MAX_ATTEMPTS="1")
    lost = stack.submit(tiny, **TINY, rounds=1, epochs_per_round=10_000)
    stack.wait(lost.id, lambda j: j.status == RUNNING, 120, "the job to start")
    first.kill9()  # the whole worker: the job is lost once, which is MAX_ATTEMPTS times
    limited = stack.submit(tiny, **TINY, rounds=1, epochs_per_round=10_000)
    stack.start_worker(MAX_ATTEMPTS="1", JOB_TIME_LIMIT_S="3")
    gave_up = stack.finished(lost.id)
    assert gave_up.status == FAILED and gave_up.attempts == 1
    assert gave_up.error == "gave up after 1 attempts (the worker was lost each time)"
    stopped = stack.finished(limited.id)
    assert stopped.status == FAILED
    assert stopped.error == "stopped at the time limit (3 s); its checkpoint is kept"
    assert stopped.finished_at - stopped.started_at >= 3
    state = torch.load(stack.settings.runs_root / limited.id / "checkpoint.pt",
                       weights_only=False)
    assert state["epoch"] > 0 or state["step"] > 0  # the training it did is kept


def test_a_store_outage_longer_than_the_clients_retries_does_not_harm_a_running_job(
        tmp_path, digits_dir, restartable_redis):
    from tests.worker.conftest import make_stack

    stack = make_stack(tmp_path, digits_dir, restartable_redis.url)
    try:
        # The lease outlasts the outage: the job goes on, its progress waits in memory.
        stack.start_worker(LEASE_S="40")
        job = stack.submit(write_tiny_dataset(stack.settings.data_root), **TINY, rounds=2,
                           epochs_per_round=40)
        stack.wait(job.id, lambda j: j.progress.get("global_epoch", 0) >= 1, what="epoch 1")
        epochs_log = stack.settings.runs_root / job.id / "progress.jsonl"

        def epochs_logged() -> int:
            return epochs_log.read_text().count("\n")

        before = epochs_logged()
        restartable_redis.stop()
        # An epoch ends during the outage (the trainer logs it locally, then reports it), and
        # the outage lasts longer than redis-py's retries of that report (10 retries with
        # backoff capped at 1 s: at most ~5.3 s).
        wait_for(lambda: epochs_logged() > before, 120, "an epoch to end")
        time.sleep(8)
        restartable_redis.start()
        done = stack.finished(job.id)
        assert done.status == SUCCEEDED, done.error
        assert done.attempts == 1 and done.note is None  # never lost, never resumed
        assert [r["global_epoch"] for r in stack.store.history(job.id)] == list(range(1, 81))
        assert current_version(stack.settings.models_root) == done.model_version
    finally:
        stack.stop()


def test_a_cancel_during_the_last_phase_stops_the_job_before_its_model_is_published(
        redis_stack):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import ServiceSettings

    stack = redis_stack
    # Few images to train on, many to embed at the end: a last phase long enough to aim at.
    rng = np.random.default_rng(0)
    np.savez(stack.settings.data_root / "wide.npz",
             x_train=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8),
             x_test=rng.integers(0, 256, (WIDE_EVAL_ITEMS, 8, 8), dtype=np.uint8))
    s = stack.settings
    api = TestClient(create_app(
        ServiceSettings(data_root=s.data_root, models_root=s.models_root,
                        state_root=s.state_root, broker_url=s.broker_url,
                        key_prefix=s.key_prefix, device="cpu",
                        allowed_hosts="testserver"),
        store=stack.store, enqueue=stack.enqueue))
    stack.start_worker()
    job = stack.submit(dataset="wide.npz")
    # Unlabelled: no evaluation while training, so this embedding is the final one.
    stack.wait(job.id, lambda j: j.progress.get("phase") == "embedding"
               and j.progress.get("global_epoch") == 2, what="the final embedding")
    answer = api.delete(f"/jobs/{job.id}")
    assert answer.status_code == 202 and answer.json()["cancel_requested"], answer.text
    done = stack.finished(job.id)
    assert done.status == CANCELED and done.model_version is None, done
    models = stack.settings.models_root
    assert current_version(models) is None and list_versions(models) == []
    assert not [p for p in models.iterdir() if p.name.startswith(".tmp-")]
    assert (stack.settings.runs_root / job.id / "checkpoint.pt").exists()
    assert api.delete(f"/jobs/{job.id}").status_code == 409

    # Past its commit (the worker's compare-and-set before CURRENT moves), a cancel is refused.
    publishing = stack.store.create(Job.new("wide.npz", {}))
    store = stack.store
    assert store.acquire(publishing.id, "w", 60)
    assert store.transition(publishing.id, {QUEUED}, RUNNING, owner="w", worker="w")
    assert store.transition(publishing.id, {RUNNING}, RUNNING, owner="w",
                            when={"cancel_requested": False}, committed=True)
    refused = api.delete(f"/jobs/{publishing.id}")
    assert refused.status_code == 409 and "publishing" in refused.json()["detail"]
    assert not store.get(publishing.id).cancel_requested

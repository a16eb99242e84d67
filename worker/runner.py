"""Running one training job: lease, heartbeat, trainer, bundle, record.

Idempotent: a job delivered twice, or re-queued after its worker was lost, resumes from the
checkpoint in its run folder; a job that is finished, canceled or held by a live worker is
left alone. Exactly one process holds a job's lease at a time.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from worker.jobs import CANCELED, FAILED, QUEUED, RUNNING, SUCCEEDED, TERMINAL, Job, JobStore
from worker.settings import Settings
from worker.submit import dataset_path

log = logging.getLogger(__name__)

CANCEL_REASON = "canceled"
LEASE_LOST = "lease lost"
DEADLINE = "time limit"
SHUTDOWN = "worker shutting down"

# Set by the job process when its worker shuts down (SIGTERM): the job checkpoints, goes back
# on the queue and resumes on the next worker instead of being cut off later.
shutdown_requested = threading.Event()


class Heartbeat(threading.Thread):
    """Renews the job's lease and watches for cancellation, off the training thread.

    `reason()` is what the training loop polls between batches: "canceled", "lease lost"
    (another worker may take over: stop without touching the record) or "time limit".
    """

    def __init__(self, store: JobStore, job_id: str, owner: str, settings: Settings,
                 deadline: float) -> None:
        super().__init__(name=f"heartbeat-{job_id[:8]}", daemon=True)
        self.store, self.job_id, self.owner = store, job_id, owner
        self.settings = settings
        self.deadline = deadline
        self._reason: str | None = None
        self._stop_event = threading.Event()

    def reason(self) -> str | None:
        if self._reason is None and time.monotonic() > self.deadline:
            self._reason = DEADLINE
        if self._reason is None and shutdown_requested.is_set():
            self._reason = SHUTDOWN
        return self._reason

    def run(self) -> None:
        while not self._stop_event.wait(self.settings.heartbeat_s):
            try:
                if not self.store.renew(self.job_id, self.owner, self.settings.lease_s):
                    self._reason = LEASE_LOST
                    return
                self.store.update(self.job_id, heartbeat_at=time.time())
                job = self.store.get(self.job_id)
                if job is not None and job.cancel_requested:
                    self._reason = CANCEL_REASON
            except Exception:  # a blip of the store must not kill training; the lease decides
                log.exception("heartbeat of job %s failed", self.job_id)

    def stop(self) -> None:
        self._stop_event.set()


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def bundle_version(job: Job) -> str:
    """One version per job, so publishing again after a crash finds its own bundle."""
    stamp = datetime.fromtimestamp(job.created_at, timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{job.id[:8]}"


def run_job(job_id: str, store: JobStore, settings: Settings,
            requeue: Callable[[str], None] | None = None) -> str | None:
    """Run (or resume) a job to its end. Returns the final status, or None when another
    process holds it. `requeue` puts a job back on the queue after a graceful shutdown."""
    job = store.get(job_id)
    if job is None:
        log.warning("job %s does not exist; ignoring its message", job_id)
        return None
    if job.status in TERMINAL:
        return job.status
    owner = worker_id()
    if not store.acquire(job_id, owner, settings.lease_s):
        log.info("job %s is held by %s; not starting it twice", job_id, store.lease_holder(job_id))
        return None
    heartbeat: Heartbeat | None = None
    try:
        job = store.require(job_id)  # read again under the lease
        if job.status in TERMINAL:
            return job.status
        now = time.time()
        if job.cancel_requested:
            store.transition(job_id, {QUEUED, RUNNING}, CANCELED, finished_at=now)
            return CANCELED
        if job.attempts >= settings.max_attempts:
            store.transition(job_id, {QUEUED, RUNNING}, FAILED, finished_at=now,
                             error=f"gave up after {job.attempts} attempts (the worker was lost "
                             "each time)")
            return FAILED
        resumed = job.attempts > 0
        if not store.transition(job_id, {QUEUED, RUNNING}, RUNNING, attempts=job.attempts + 1,
                                started_at=job.started_at or now, worker=owner,
                                heartbeat_at=now, progress={"phase": "starting"}):
            return store.require(job_id).status
        if resumed:
            log.info("job %s: attempt %d, resuming from its checkpoint", job_id, job.attempts + 1)
        heartbeat = Heartbeat(store, job_id, owner, settings,
                              deadline=time.monotonic() + settings.job_time_limit_s)
        heartbeat.start()
        return _train_and_publish(job, store, settings, heartbeat, requeue)
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        store.release(job_id, owner)


def _train_and_publish(job: Job, store: JobStore, settings: Settings, heartbeat: Heartbeat,
                       requeue: Callable[[str], None] | None) -> str | None:
    # Imported here: the worker's parent process never loads torch, let alone CUDA.
    from trainer.bundle import read_manifest, set_current, validate, write_bundle
    from trainer.config import TrainConfig
    from trainer.data import open_collection
    from trainer.engine import Trainer
    from trainer.errors import BundleError, TrainerError, TrainingStopped

    run_dir = settings.runs_root / job.id
    run_dir.mkdir(parents=True, exist_ok=True)
    progress: dict[str, Any] = {}
    last_status = [0.0]

    def on_epoch(record: dict[str, Any]) -> None:
        progress.clear()
        progress.update(record, phase="training")
        store.update(job.id, progress=dict(progress))
        store.append_history(job.id, record)

    def on_status(phase: str, info: dict[str, Any]) -> None:
        # Decoding reports often; the record is written at most every 2 s.
        if phase == "decoding" and time.monotonic() - last_status[0] < 2 and info.get(
                "done") != info.get("items"):
            return
        last_status[0] = time.monotonic()
        info = {k: v for k, v in info.items() if k != "metrics"}
        store.update(job.id, progress={**progress, "phase": phase, **{f"{phase}_{k}": v for k, v
                                                                       in info.items()}})

    def fail(message: str) -> str:
        store.transition(job.id, {RUNNING}, FAILED, error=message, finished_at=time.time())
        return FAILED

    try:
        config = TrainConfig.from_dict(job.config)
        collection = open_collection(dataset_path(settings, job.dataset), name=job.dataset,
                                     work_dir=str(run_dir))
        result = Trainer(config, collection, run_dir, on_epoch=on_epoch, on_status=on_status,
                         should_stop=heartbeat.reason).run()
        if heartbeat.reason() == LEASE_LOST:
            return None
        store.update(job.id, progress={**progress, "phase": "publishing"})
        version = bundle_version(job)
        try:
            read_manifest(settings.models_root, version)
            validate(settings.models_root / version)  # published before a crash: reuse it
        except BundleError:
            write_bundle(run_dir, settings.models_root, dataset=job.dataset, version=version,
                         extra={"job_id": job.id})
        if job.promote:
            set_current(settings.models_root, version)
        metrics = result.metrics
        store.transition(job.id, {RUNNING}, SUCCEEDED, model_version=version,
                         finished_at=time.time(),
                         progress={**progress, "phase": "done", "metrics": metrics})
        return SUCCEEDED
    except TrainingStopped as stop:
        if stop.reason == CANCEL_REASON:
            store.transition(job.id, {RUNNING}, CANCELED, finished_at=time.time(),
                             note="stopped on request; its last checkpoint is kept")
            return CANCELED
        if stop.reason == LEASE_LOST:
            log.warning("job %s: lease lost; leaving it to whoever holds it now", job.id)
            return None
        if stop.reason == SHUTDOWN and requeue is not None:
            # Not a failed attempt: the count stays as it was before this start.
            store.transition(job.id, {RUNNING}, QUEUED, attempts=job.attempts,
                             progress={**progress, "phase": "requeued"},
                             note="its worker shut down; re-queued to resume from its "
                             "checkpoint")
            requeue(job.id)
            return QUEUED
        return fail(f"stopped at the time limit ({settings.job_time_limit_s} s); its checkpoint "
                    "is kept")
    except TrainerError as exc:
        return fail(str(exc))
    except MemoryError:
        return fail("out of memory (host); try a smaller batch_size, image_size or cache_max_gb")
    except Exception as exc:
        if _is_cuda_oom(exc):
            _free_cuda()
            return fail(f"out of GPU memory; try a smaller batch_size or image_size ({exc})")
        log.exception("job %s failed", job.id)
        return fail(f"internal error: {type(exc).__name__}: {exc}")


def record_crash(store: JobStore, job_id: str, exit_code: int) -> None:
    """The job's process died without recording an end (native crash, out-of-memory kill)."""
    how = (f"was killed by signal {-exit_code}" if exit_code < 0 else
           f"exited with code {exit_code}")
    hint = " (signal 9 is often the kernel's out-of-memory killer)" if exit_code == -9 else ""
    store.transition(job_id, {QUEUED, RUNNING}, FAILED, finished_at=time.time(),
                     error=f"the training process {how}{hint}")


def _is_cuda_oom(exc: BaseException) -> bool:
    try:
        import torch

        return isinstance(exc, torch.cuda.OutOfMemoryError)
    except ImportError:  # pragma: no cover
        return False


def _free_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()

"""Running one training job: lease, heartbeat, trainer, bundle, record.

Idempotent: a job delivered twice, or re-queued after its worker was lost, resumes from the
checkpoint in its run folder; a job that is finished, canceled or held by a live worker is
left alone. Exactly one process holds a job's lease at a time, and every write of a worker to
the record is fenced by that lease (worker.recorder), so a worker that stalled past its lease
changes nothing once another has taken over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from state.datasets import dataset_path
from state.jobs import CANCELED, FAILED, QUEUED, RUNNING, SUCCEEDED, TERMINAL, Job, JobStore
from state.settings import Settings
from worker.heartbeat import CANCEL_REASON, LEASE_LOST, SHUTDOWN, Heartbeat
from worker.lease import Lease, LeaseLost, new_owner
from worker.recorder import JobRecorder

log = logging.getLogger(__name__)


def run_job(job_id: str, store: JobStore, settings: Settings,
            requeue: Callable[[str], None] | None = None,
            owner: str | None = None) -> str | None:
    """Run (or resume) a job to its end. Returns the final status, or None when another
    process holds it (or took it over). `requeue` puts a job back on the queue after a
    graceful shutdown; `owner` names this run in the lease (the supervising task's choice, so
    that it can record a crash of this process)."""
    job = store.get(job_id)
    if job is None:
        log.warning("job %s does not exist; ignoring its message", job_id)
        return None
    if job.status in TERMINAL:
        return job.status
    lease = Lease(store, job_id, owner or new_owner(), settings.lease_s)
    if not lease.acquire():
        log.info("job %s is held by %s; not starting it twice", job_id, store.lease_holder(job_id))
        return None
    owner = lease.owner
    heartbeat: Heartbeat | None = None
    recorder: JobRecorder | None = None
    try:
        job = store.require(job_id)  # read again under the lease
        if job.status in TERMINAL:
            return job.status
        now = time.time()
        if job.cancel_requested:
            store.transition(job_id, {QUEUED, RUNNING}, CANCELED, owner=owner, finished_at=now)
            return CANCELED
        if job.attempts >= settings.max_attempts:
            store.transition(job_id, {QUEUED, RUNNING}, FAILED, owner=owner, finished_at=now,
                             error=f"gave up after {job.attempts} attempts (the worker was lost "
                             "each time)")
            return FAILED
        resumed = job.attempts > 0
        if not store.transition(job_id, {QUEUED, RUNNING}, RUNNING, owner=owner,
                                attempts=job.attempts + 1, started_at=job.started_at or now,
                                worker=owner, heartbeat_at=now, progress={"phase": "starting"}):
            return store.require(job_id).status
        if resumed:
            log.info("job %s: attempt %d, resuming from its checkpoint", job_id, job.attempts + 1)
        run_dir = settings.runs_root / job.id
        run_dir.mkdir(parents=True, exist_ok=True)
        recorder = JobRecorder(store, lease, run_dir / "progress.jsonl")
        recorder.start()
        heartbeat = Heartbeat(store, lease, settings.heartbeat_s,
                              deadline=time.monotonic() + settings.job_time_limit_s)
        heartbeat.start()
        return _train_and_publish(job, settings, heartbeat, recorder, requeue)
    except LeaseLost:
        log.warning("job %s: lease lost; leaving it to whoever holds it now", job_id)
        return None
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        if recorder is not None:
            recorder.stop()
        lease.release()


def _train_and_publish(job: Job, settings: Settings, heartbeat: Heartbeat,
                       recorder: JobRecorder, requeue: Callable[[str], None] | None) -> str:
    # Imported here: the worker's parent process never loads torch, let alone CUDA.
    from live.collection import training_collection
    from live.embed import embed_files_with
    from live.publish import PublishOptions, publish_options
    from state.stores import open_changes
    from trainer import warm_start
    from trainer.bundle import read_manifest
    from trainer.config import TrainConfig
    from trainer.data import open_collection
    from trainer.errors import RankFailed, TrainerError, TrainingStopped
    from trainer.label_free import LabelFreeScore
    from trainer.label_free_reference import score_on_run_sample
    from trainer.launcher import run_training
    from worker.live import compact_after_publish, take_snapshot
    from worker.publish import publish

    run_dir = settings.runs_root / job.id
    progress: dict[str, Any] = {}
    last_status = [0.0]
    # Which run recorded an epoch, and where that run began: a run resumed from its checkpoint
    # begins after the epochs it restored, so the history shows that none was run twice.
    started_at_epoch: list[int] = []

    def on_epoch(record: dict[str, Any]) -> None:
        if not started_at_epoch:
            started_at_epoch.append(record["global_epoch"])
        record = {**record, "attempt": job.attempts + 1, "run_first_epoch": started_at_epoch[0]}
        progress.clear()
        progress.update(record, phase="training")
        recorder.epoch(record)
        recorder.progress(progress)

    def on_status(phase: str, info: dict[str, Any]) -> None:
        # Decoding reports often; the record is written at most every 2 s.
        if phase == "decoding" and time.monotonic() - last_status[0] < 2 and info.get(
                "done") != info.get("items"):
            return
        last_status[0] = time.monotonic()
        info = {k: v for k, v in info.items() if k != "metrics"}
        recorder.progress({**progress, "phase": phase,
                           **{f"{phase}_{k}": v for k, v in info.items()}})

    def should_stop() -> str | None:
        """Between batches. A lost lease aborts at once, without the checkpoint a stop
        writes: the run folder belongs to the job's new holder now."""
        reason = heartbeat.reason()
        if reason == LEASE_LOST:
            raise LeaseLost(job.id)
        return reason

    def between_phases() -> None:
        """Between the last phases: only a cancel or a lost lease stops a finished run."""
        reason = heartbeat.reason()
        if reason == LEASE_LOST:
            raise LeaseLost(job.id)
        if reason == CANCEL_REASON:
            raise TrainingStopped(CANCEL_REASON)

    def fail(message: str) -> str:
        recorder.finish(FAILED, error=message, finished_at=time.time())
        return FAILED

    try:
        # The submission gate (worker.submit) proved config, dataset and weights usable: they
        # are only read back and opened here.
        config = TrainConfig.from_dict(job.config)
        # Archives are extracted once, next to themselves, and shared by jobs and the API.
        root = dataset_path(settings, job.dataset)
        collection = open_collection(root, name=job.dataset)
        # The collection as the change log left it when this job first started: added items
        # in, deleted ones out; the same snapshot when the job resumes.
        changes = open_changes(settings)
        run_dir.mkdir(parents=True, exist_ok=True)
        snapshot = recorder.retrying(lambda: take_snapshot(run_dir, changes, job.dataset))
        collection = recorder.retrying(lambda: training_collection(
            collection, changes, job.dataset, root, snapshot.seq))
        # The gate placed a pretrained start's file under the data root: nothing to fetch.
        weights = warm_start.resolve(config.init_from, settings.models_root,
                                     settings.data_root, backbone=config.backbone,
                                     download=False) if config.init_from else None
        # gpus=k: this process is rank 0 (callbacks, lease, cancel) and starts k-1 more; each
        # gets the same collection (with the live changes) and initial weights.
        result = run_training(config, collection, run_dir, on_epoch=on_epoch,
                              on_status=on_status, should_stop=should_stop, init_weights=weights)
        recorder.progress({**progress, "phase": "publishing"})

        def with_changes() -> PublishOptions:
            """Changes made while the job trained go into its bundle, embedded anew."""
            upto = recorder.retrying(lambda: changes.last_seq(job.dataset))
            embed = embed_files_with(run_dir / "encoder.pt", config.device, config.precision)
            return recorder.retrying(lambda: publish_options(
                run_dir, changes, job.dataset, root, snapshot.seq, upto, embed,
                init_from=config.init_from or None, base_added=snapshot.added))

        def rescore(version: str) -> LabelFreeScore | None:
            """The current version's label-free score on this run's items and views, at the
            precision its own run measured in (the gate's same-items comparison)."""
            figures = read_manifest(settings.models_root, version).get("metrics") or {}
            return score_on_run_sample(settings.models_root / version / "encoder.pt", run_dir,
                                       collection, config.device,
                                       str(figures.get("precision") or config.precision))

        version = publish(job, run_dir, settings, recorder, between_phases, with_changes,
                          lambda: compact_after_publish(settings, recorder.store, changes, job,
                                                        snapshot), rescore)
        recorder.finish(SUCCEEDED, model_version=version, finished_at=time.time(),
                        progress={**progress, "phase": "done", "metrics": result.metrics})
        return SUCCEEDED
    except TrainingStopped as stop:
        if stop.reason == CANCEL_REASON:
            recorder.finish(CANCELED, finished_at=time.time(),
                            note="stopped on request; its last checkpoint is kept")
            return CANCELED
        if stop.reason == SHUTDOWN and requeue is not None:
            # Not a failed attempt: the count stays as it was before this start.
            recorder.finish(QUEUED, attempts=job.attempts, enqueued_at=time.time(),
                            progress={**progress, "phase": "requeued"},
                            note="its worker shut down; re-queued to resume from its "
                            "checkpoint")
            requeue(job.id)
            return QUEUED
        if stop.reason == SHUTDOWN:
            return fail("its worker shut down; its checkpoint is kept")
        return fail(f"stopped at the time limit ({settings.job_time_limit_s} s); its checkpoint "
                    "is kept")
    except RankFailed as exc:
        # One of the job's processes died: like a lost worker, the job goes back on the queue
        # and resumes from its checkpoint; the attempt counts against MAX_ATTEMPTS.
        if requeue is None:
            return fail(str(exc))
        recorder.finish(QUEUED, enqueued_at=time.time(), progress={**progress, "phase": "requeued"},
                        note=f"{exc}; re-queued")
        requeue(job.id)
        return QUEUED
    except TrainerError as exc:
        return fail(str(exc))
    except MemoryError:
        return fail("out of memory (host); try a smaller batch_size, image_size or cache_max_gb")
    except LeaseLost:
        raise
    except Exception as exc:
        if _is_cuda_oom(exc):
            _free_cuda()
            return fail(f"out of GPU memory; try a smaller batch_size or image_size ({exc})")
        log.exception("job %s failed", job.id)
        return fail(f"internal error: {type(exc).__name__}: {exc}")


def record_crash(store: JobStore, job_id: str, exit_code: int, owner: str) -> bool:
    """The job's process (run as `owner`) died without recording an end (native crash,
    out-of-memory kill): fail the job, but only if it is still that process's. Another worker
    may have taken the job over while this one stalled; its job is left alone. Returns whether
    the job was failed."""
    how = (f"was killed by signal {-exit_code}" if exit_code < 0 else
           f"exited with code {exit_code}")
    hint = " (signal 9 is often the kernel's out-of-memory killer)" if exit_code == -9 else ""
    fields: dict[str, Any] = {"finished_at": time.time(),
                              "error": f"the training process {how}{hint}"}
    failed = (
        # Its lease is still live (the usual case: the task notices at once).
        store.transition(job_id, {QUEUED, RUNNING}, FAILED, owner=owner, **fields)
        # Its lease lapsed, and nobody took the job since.
        or store.transition(job_id, {RUNNING}, FAILED, unleased=True, when={"worker": owner},
                            **fields)
        # It died before taking the lease of a job that never started.
        or store.transition(job_id, {QUEUED}, FAILED, unleased=True, when={"worker": None},
                            **fields)
    )
    store.release(job_id, owner)
    if not failed:
        log.warning("job %s: its training process %s, but the job is no longer its own; "
                    "left as it is", job_id, how)
    return failed


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

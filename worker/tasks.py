"""Celery tasks (thin wrappers around worker.runner) and the worker-side lost-job sweeper."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from celery import signals

from state.jobs import TERMINAL, JobStore
from state.settings import get_settings
from state.stores import open_store
from trainer.current import migrate
from trainer.leftovers import sweep_leftovers
from worker.app import TRAIN_TASK, app, send_job
from worker.capacity import job_gpus, own_gpus
from worker.lease import new_owner
from worker.runner import record_crash
from worker.sweeper import Sweeper

log = logging.getLogger(__name__)


@app.task(name=TRAIN_TASK, acks_late=True)
def train(job_id: str) -> int:
    """Run the job in a child process (worker.job_process) and wait for it."""
    settings = get_settings()
    store = open_store(settings)
    if not _may_need_running(store, job_id):
        return 0
    job = store.get(job_id)
    if job is not None and job_gpus(job.config) > own_gpus(settings):
        # Sent to a queue of smaller jobs by hand: back to the queue of workers that own enough.
        log.warning("job %s asks for %d GPUs, this worker owns %d; sending it on", job_id,
                    job_gpus(job.config), own_gpus(settings))
        enqueue(job_id)
        return 0
    owner = new_owner()
    proc = subprocess.Popen([sys.executable, "-m", "worker.job_process", job_id, owner])
    try:
        code = proc.wait()
    except BaseException:  # soft time limit, shutdown: do not leave the trainer behind
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if code != 0:
        record_crash(store, job_id, code, owner)
    return code


def _may_need_running(store: JobStore, job_id: str) -> bool:
    """False for a message that is surely a duplicate (the job is finished, or a live worker
    holds it): dropped without starting a process. A store error leaves it to the job
    process to decide."""
    try:
        job = store.get(job_id)
        if job is None or job.status in TERMINAL or store.lease_holder(job_id) is not None:
            log.info("job %s is finished or held elsewhere; dropping this message", job_id)
            return False
    except Exception:
        log.warning("job %s: the job store did not answer; starting it anyway", job_id)
    return True


def enqueue(job_id: str) -> None:
    settings = get_settings()
    send_job(app, settings, open_store(settings), job_id)


_sweeper: Sweeper | None = None


@signals.worker_ready.connect
def _start_sweeper(**_: object) -> None:
    # In the worker's parent process, which never runs training itself.
    global _sweeper
    settings = get_settings()
    try:
        removed = sweep_leftovers(settings.models_root)
        if removed:
            log.info("removed what interrupted publishes left behind: %s", ", ".join(removed))
        migrate(settings.models_root)  # one CURRENT per collection (trainer/current.py)
    except OSError:
        log.warning("could not sweep %s for leftovers", settings.models_root, exc_info=True)
    name, gpus = f"{socket.gethostname()}:{os.getpid()}", own_gpus(settings)

    def advertise(store: JobStore) -> None:
        store.advertise_capacity(name, gpus, settings.capacity_ttl_s)

    _sweeper = Sweeper(lambda: open_store(settings), enqueue, settings.sweep_interval_s,
                       settings.resend_queued_after_s, idle=_idle, on_tick=advertise)
    _sweeper.start()


def _idle() -> bool:
    """This worker runs no task and holds none reserved (read in its parent process)."""
    from celery.worker import state

    return not state.active_requests and not state.reserved_requests


@signals.worker_shutdown.connect
def _stop_sweeper(**_: object) -> None:
    if _sweeper is not None:
        _sweeper.stop()


@signals.worker_shutting_down.connect
def _stop_running_jobs(**_: object) -> None:
    """Warm shutdown (SIGTERM, docker stop): ask running jobs to checkpoint and go back on the
    queue, instead of waiting hours for them or losing their progress since the last
    checkpoint to a SIGKILL."""
    for pid in job_processes(os.getpid()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            log.info("asked job process %d to checkpoint and re-queue", pid)


def job_processes(ancestor: int) -> list[int]:
    """Descendants of `ancestor` running worker.job_process (read from /proc)."""
    parents: dict[int, int] = {}
    commands: dict[int, bytes] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
            commands[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        # The field after the parenthesised command name: state, then the parent's pid.
        parents[int(entry)] = int(stat[stat.rindex(b")") + 2:].split()[1])
    found = []
    for pid, cmd in commands.items():
        if b"worker.job_process" not in cmd:
            continue
        p = parents.get(pid, 0)
        while p > 1 and p != ancestor:
            p = parents.get(p, 0)
        if p == ancestor:
            found.append(pid)
    return found

"""Celery tasks (thin wrappers around worker.runner) and the worker-side lost-job sweeper."""

from __future__ import annotations

import logging
import subprocess
import sys

from celery import signals

from worker.app import TRAIN_TASK, app
from worker.jobs import open_store
from worker.runner import record_crash
from worker.settings import get_settings
from worker.sweeper import Sweeper

log = logging.getLogger(__name__)


@app.task(name=TRAIN_TASK, acks_late=True)
def train(job_id: str) -> int:
    """Run the job in a child process (worker.job_process) and wait for it."""
    proc = subprocess.Popen([sys.executable, "-m", "worker.job_process", job_id])
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
        settings = get_settings()
        record_crash(open_store(settings), job_id, code)
    return code


def enqueue(job_id: str) -> None:
    app.send_task(TRAIN_TASK, args=[job_id], queue=get_settings().gpu_queue)


_sweeper: Sweeper | None = None


@signals.worker_ready.connect
def _start_sweeper(**_: object) -> None:
    # In the worker's parent process, which never runs training itself.
    global _sweeper
    settings = get_settings()
    _sweeper = Sweeper(lambda: open_store(settings), enqueue, settings.sweep_interval_s)
    _sweeper.start()


@signals.worker_shutdown.connect
def _stop_sweeper(**_: object) -> None:
    if _sweeper is not None:
        _sweeper.stop()

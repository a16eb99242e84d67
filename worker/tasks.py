"""Celery tasks (thin wrappers around worker.runner) and the worker-side lost-job sweeper."""

from __future__ import annotations

import logging

from celery import signals

from worker.app import TRAIN_TASK, app
from worker.jobs import open_store
from worker.runner import run_job
from worker.settings import get_settings
from worker.sweeper import Sweeper

log = logging.getLogger(__name__)


@app.task(name=TRAIN_TASK, acks_late=True)
def train(job_id: str) -> str | None:
    settings = get_settings()
    return run_job(job_id, open_store(settings), settings)


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

"""The Celery app, configured from Settings.

Long GPU jobs need: late acks (a job is acknowledged when it ends, not when it starts),
prefetch 1 (a busy worker holds no second job), one job per GPU process (concurrency 1),
a fresh child process per job (GPU memory is returned, CUDA is only ever touched in the child),
a Redis visibility timeout longer than the longest job (else Redis re-delivers a running job),
and a time limit whose soft part leaves time to checkpoint.
"""

from __future__ import annotations

from celery import Celery

from state.jobs import JobStore
from state.settings import Settings, get_settings
from worker.capacity import queue_of_job
from worker.embedded_broker import TRANSPORT

TRAIN_TASK = "and.train"


def make_celery(settings: Settings) -> Celery:
    app = Celery("and_worker")
    limit = settings.job_time_limit_s
    conf: dict = {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_max_tasks_per_child": 1,
        "task_ignore_result": True,
        "task_default_queue": settings.gpu_queue,
        "task_routes": {TRAIN_TASK: {"queue": settings.gpu_queue}},
        # Our own deadline stops training cleanly at `limit`; these are backstops.
        "task_soft_time_limit": limit + 300,
        "task_time_limit": limit + 600,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "imports": ("worker.tasks",),
    }
    if settings.embedded:
        # No server: messages are files in one folder (same machine only).
        queue = settings.state_root / "broker" / "queue"
        processed = settings.state_root / "broker" / "processed"
        control = settings.state_root / "broker" / "control"
        for folder in (queue, processed, control):
            folder.mkdir(parents=True, exist_ok=True)
        conf |= {
            "broker_url": "filesystem://",
            "broker_transport": TRANSPORT,  # stops without waiting out a poll cycle
            "broker_transport_options": {
                "data_folder_in": str(queue), "data_folder_out": str(queue),
                "processed_folder": str(processed), "control_folder": str(control),
                "store_processed": False, "polling_interval": 0.1,
            },
        }
    else:
        conf |= {
            "broker_url": settings.broker_url,
            "broker_transport_options": {"visibility_timeout": limit + 3600},
        }
    app.conf.update(conf)
    return app


def send_job(celery: Celery, settings: Settings, store: JobStore, job_id: str) -> None:
    """Put a job on the queue: how the API queues a submission and a worker sends a job on
    (a re-queue, a re-send, a job too large for it). A job asking for k GPUs goes to the queue
    of the workers that own k."""
    celery.send_task(TRAIN_TASK, args=[job_id], queue=queue_of_job(settings, store, job_id))


app = make_celery(get_settings())

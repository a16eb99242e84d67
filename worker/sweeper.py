"""Finding lost jobs: a running job whose lease lapsed has lost its worker (killed, machine
gone). It goes back to `queued` and onto the queue; the next worker resumes it from its
checkpoint. The status change is a compare-and-set, so when several workers sweep at once only
one re-queues a job; the lease makes sure it never runs twice at the same time.

With Redis, the broker would also re-deliver the unacknowledged message, but only after the
visibility timeout (longer than the longest job); the filesystem transport never re-delivers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from worker.jobs import QUEUED, RUNNING, JobStore

log = logging.getLogger(__name__)


def sweep(store: JobStore, enqueue: Callable[[str], None]) -> list[str]:
    requeued = []
    for job in store.lost_jobs():
        note = (f"worker {job.worker} was lost at "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(job.heartbeat_at or 0))} UTC; "
                "re-queued to resume from its last checkpoint")
        if store.transition(job.id, {RUNNING}, QUEUED, note=note,
                            progress={**job.progress, "phase": "requeued"}):
            enqueue(job.id)
            requeued.append(job.id)
            log.warning("job %s: %s", job.id, note)
    return requeued


class Sweeper(threading.Thread):
    """Sweeps at start and then every `interval` seconds, in the worker's parent process."""

    def __init__(self, store_factory: Callable[[], JobStore], enqueue: Callable[[str], None],
                 interval: float) -> None:
        super().__init__(name="lost-job-sweeper", daemon=True)
        self.store_factory = store_factory
        self.enqueue = enqueue
        self.interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        store = self.store_factory()
        while True:
            try:
                sweep(store, self.enqueue)
            except Exception:
                log.exception("sweep for lost jobs failed; trying again later")
            if self._stop_event.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop_event.set()

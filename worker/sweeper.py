"""Finding jobs nobody will run otherwise.

- Lost jobs: a running job whose lease lapsed has lost its worker (killed, machine gone). It
  goes back to `queued` and onto the queue; the next worker resumes it from its checkpoint.
- Waiting jobs: a queued job that no worker has taken long after its message was sent (the
  send failed after the job was re-queued, or the broker lost the message) is sent again, by
  a worker that has itself been idle that long (an idle worker would have received the
  message; jobs waiting behind busy workers are left alone). Sending twice is harmless: a
  message for a job that is finished or held is dropped, and the lease makes sure a job never
  runs twice at the same time.

Every status change is a compare-and-set that also checks nobody holds the lease, so when
several workers sweep at once only one re-queues a job, and never one a worker has just taken.

With Redis, the broker would also re-deliver an unacknowledged message, but only after the
visibility timeout (longer than the longest job); the filesystem transport never re-delivers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from state.jobs import QUEUED, RUNNING, JobStore

log = logging.getLogger(__name__)


def sweep(store: JobStore, enqueue: Callable[[str], None],
          resend_after_s: float | None = None) -> list[str]:
    """Re-queue lost jobs, and (with `resend_after_s`) send waiting ones again; returns the
    ids sent to the queue."""
    sent = []
    for job in store.lost_jobs():
        note = (f"worker {job.worker} was lost at "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(job.heartbeat_at or 0))} UTC; "
                "re-queued to resume from its last checkpoint")
        if store.transition(job.id, {RUNNING}, QUEUED, unleased=True, note=note,
                            enqueued_at=time.time(),
                            progress={**job.progress, "phase": "requeued"}):
            log.warning("job %s: %s", job.id, note)
            enqueue(job.id)
            sent.append(job.id)
    if resend_after_s is not None:
        for job in store.waiting_jobs(resend_after_s):
            # Compare-and-set on the send time: one sweeper sends it, the others see it moved.
            if store.transition(job.id, {QUEUED}, QUEUED, unleased=True,
                                when={"enqueued_at": job.enqueued_at},
                                enqueued_at=time.time()):
                log.warning("job %s: queued since %s UTC and not taken by any worker; sending "
                            "it again", job.id, time.strftime(
                                "%Y-%m-%d %H:%M:%S",
                                time.gmtime(job.enqueued_at or job.updated_at)))
                enqueue(job.id)
                sent.append(job.id)
    return sent


class Sweeper(threading.Thread):
    """Sweeps at start and then every `interval` seconds, in the worker's parent process.
    `idle()` says whether this worker runs or holds no job now; waiting jobs are sent again
    only after it has been idle for `resend_after_s`."""

    def __init__(self, store_factory: Callable[[], JobStore], enqueue: Callable[[str], None],
                 interval: float, resend_after_s: float | None = None,
                 idle: Callable[[], bool] = lambda: True,
                 on_tick: Callable[[JobStore], None] | None = None) -> None:
        super().__init__(name="lost-job-sweeper", daemon=True)
        self.store_factory = store_factory
        self.enqueue = enqueue
        self.interval = interval
        self.resend_after_s = resend_after_s
        self.idle = idle
        self.on_tick = on_tick  # e.g. renew this worker's advertised capacity
        self._idle_since: float | None = None
        self._stop_event = threading.Event()

    def _may_resend(self) -> float | None:
        now = time.monotonic()
        if not self.idle():
            self._idle_since = None
            return None
        if self._idle_since is None:
            self._idle_since = now
        idle_for = now - self._idle_since
        if self.resend_after_s is None or idle_for < self.resend_after_s:
            return None
        return self.resend_after_s

    def run(self) -> None:
        store = self.store_factory()
        while True:
            try:
                if self.on_tick is not None:
                    self.on_tick(store)
                sweep(store, self.enqueue, self._may_resend())
            except Exception:
                log.exception("sweep for lost jobs failed; trying again later")
            if self._stop_event.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop_event.set()

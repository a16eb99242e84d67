"""The heartbeat of a running job: renews its lease and watches for cancellation, off the
training thread."""

from __future__ import annotations

import logging
import threading
import time

from state.jobs import JobStore
from worker.lease import Lease

log = logging.getLogger(__name__)

CANCEL_REASON = "canceled"
LEASE_LOST = "lease lost"
DEADLINE = "time limit"
SHUTDOWN = "worker shutting down"

# Set by the job process when its worker shuts down (SIGTERM): the job checkpoints, goes back
# on the queue and resumes on the next worker instead of being cut off later.
shutdown_requested = threading.Event()


class Heartbeat(threading.Thread):
    """`reason()` is what the job polls between batches and between its last phases:
    "lease lost" (another worker may hold the job: stop at once, touching nothing),
    "canceled", "time limit" or "worker shutting down"."""

    def __init__(self, store: JobStore, lease: Lease, interval_s: float,
                 deadline: float) -> None:
        super().__init__(name=f"heartbeat-{lease.job_id[:8]}", daemon=True)
        self.store, self.lease = store, lease
        self.interval_s = interval_s
        self.deadline = deadline  # time.monotonic() at which the job stops
        self._canceled = False
        self._stop_event = threading.Event()

    def reason(self) -> str | None:
        if not self.lease.held():
            return LEASE_LOST
        if self._canceled:
            return CANCEL_REASON
        if time.monotonic() > self.deadline:
            return DEADLINE
        if shutdown_requested.is_set():
            return SHUTDOWN
        return None

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            try:
                if not self.lease.renew():
                    return
                job_id, owner = self.lease.job_id, self.lease.owner
                self.store.update_running(job_id, owner, heartbeat_at=time.time())
                job = self.store.get(job_id)
                if job is not None and job.cancel_requested:
                    self._canceled = True
            except Exception:  # a blip of the store must not kill training; the lease decides
                log.warning("heartbeat of job %s failed", self.lease.job_id,
                            exc_info=log.isEnabledFor(logging.DEBUG))

    def stop(self) -> None:
        self._stop_event.set()

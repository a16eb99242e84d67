"""A job's lease as the process holding it sees it.

The store keeps the lease as a key (or row) that expires `lease_s` after its last renewal. The
holder also keeps a local bound: the lease is surely valid until `lease_s` after the last
successful renewal was *sent* (the store's expiry is at least that late). A holder past that
bound (stalled, paused, cut off from the store) may already have been replaced and must stop:
its own writes to the record are refused by the store anyway (they name the owner and the
store checks the lease in the same atomic step), and it must not touch the run folder the next
holder works in.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

from state.jobs import JobStore

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Raised in the training loop of a process that no longer (surely) holds its job."""


def new_owner() -> str:
    """A name unique to one run of one job: host, process, and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Lease:
    def __init__(self, store: JobStore, job_id: str, owner: str, lease_s: float) -> None:
        self.store, self.job_id, self.owner, self.lease_s = store, job_id, owner, lease_s
        self._valid_until = float("-inf")
        self._lost = False

    def acquire(self) -> bool:
        sent = time.monotonic()
        if not self.store.acquire(self.job_id, self.owner, self.lease_s):
            return False
        self._valid_until = sent + self.lease_s
        return True

    def renew(self) -> bool:
        """Extend the lease; False (and lost for good) if the store says it is not ours.
        Store errors propagate: the local bound keeps running down meanwhile."""
        if self._lost:
            return False
        sent = time.monotonic()
        self._warn_if_late(sent)
        if self.store.renew(self.job_id, self.owner, self.lease_s):
            self._valid_until = sent + self.lease_s
            return True
        self.mark_lost()
        return False

    def _warn_if_late(self, now: float) -> None:
        """Say so when the renewals fall behind: a lease that lapses while its process lives
        sends the job to another worker (an operator then raises LEASE_S, or finds the stall)."""
        gap = now - (self._valid_until - self.lease_s)  # since the last renewal was sent
        if gap > self.lease_s / 2:
            log.warning("job %s: %.2f s since the lease was last renewed (it lasts %.1f s): "
                        "this process was stalled", self.job_id, gap, self.lease_s)

    def mark_lost(self) -> None:
        if not self._lost:
            log.warning("job %s: lease lost; leaving the job to whoever holds it now",
                        self.job_id)
        self._lost = True

    def held(self) -> bool:
        return not self._lost and time.monotonic() < self._valid_until

    def release(self) -> None:
        try:
            self.store.release(self.job_id, self.owner)
        except Exception:  # it expires on its own
            log.warning("job %s: could not release its lease", self.job_id, exc_info=True)

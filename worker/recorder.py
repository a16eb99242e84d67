"""What a job's process writes to the job record while it runs, written so that neither a blip
of the store nor a stalled worker can harm the job.

- Progress and epoch records are buffered and written by a thread of their own; a write that
  fails (the store is unreachable) is retried until it succeeds or the lease is gone. Training
  never waits for the store: the lease decides whether the job goes on, as the heartbeat does.
- Every write names the lease's owner and is fenced by the store: once another worker holds
  the job, nothing of ours lands.
- Epoch records are written by position (entry k is the k-th epoch of the run), so a retried
  write or a resumed run never records an epoch twice, and the epochs a previous attempt
  checkpointed but had not recorded yet are recorded by the next (read back from the
  trainer's log, without the `attempt` and `run_first_epoch` that worker.runner adds to the
  records of the run that made them).
- The final transition (succeeded, failed, canceled, re-queued) is written after every epoch
  record, and retried the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from state.jobs import RUNNING, JobStore
from trainer.progress import read_jsonl
from worker.lease import Lease, LeaseLost

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_MIN_S, RETRY_MAX_S = 0.2, 5.0


class JobRecorder(threading.Thread):
    def __init__(self, store: JobStore, lease: Lease, progress_log: Path) -> None:
        super().__init__(name=f"recorder-{lease.job_id[:8]}", daemon=True)
        self.store, self.lease = store, lease
        self.job_id, self.owner = lease.job_id, lease.owner
        self.progress_log = progress_log  # the trainer's progress.jsonl: every epoch so far
        self._records: list[dict[str, Any]] = []  # every epoch of the run, in order
        self._stored = 0  # how many of them the store is known to hold
        self._progress: dict[str, Any] | None = None  # latest, not yet written
        self._closed = False
        self._lock = threading.Lock()  # guards the buffers
        self._write_lock = threading.Lock()  # one writer at a time, the final one last
        self._wake = threading.Event()
        self._stop_event = threading.Event()

    # --- called by the training thread --------------------------------------------------
    def progress(self, progress: dict[str, Any]) -> None:
        with self._lock:
            if not self._closed:
                self._progress = dict(progress)
        self._wake.set()

    def epoch(self, record: dict[str, Any]) -> None:
        with self._lock:
            if len(self._records) != record["global_epoch"] - 1:
                # The first epoch of a resumed run: the epochs before it come from the
                # checkpoint, as the trainer rewrote them into its log.
                self._records = read_jsonl(self.progress_log)[:record["global_epoch"] - 1]
            self._records.append(record)
        self._wake.set()

    def pending(self) -> bool:
        with self._lock:
            return self._progress is not None or self._stored < len(self._records)

    # --- the writer thread --------------------------------------------------------------
    def run(self) -> None:
        delay = RETRY_MIN_S
        while not self._stop_event.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop_event.is_set():
                return
            try:
                self.flush()
                delay = RETRY_MIN_S
            except Exception:  # a blip of the store must not kill training; the lease decides
                log.warning("job %s: writing progress failed; retrying in %.1fs", self.job_id,
                            delay, exc_info=log.isEnabledFor(logging.DEBUG))
                if self._stop_event.wait(delay):
                    return
                delay = min(delay * 2, RETRY_MAX_S)
                self._wake.set()

    def flush(self) -> None:
        """Write what is buffered; raises if the store cannot be reached (nothing is lost)."""
        with self._write_lock:
            with self._lock:
                if self._closed:
                    return
                start, records = self._stored, self._records[self._stored:]
                progress = self._progress
            if records:
                n = self.store.extend_history(self.job_id, start, records, owner=self.owner)
                if n is None:
                    self._refused()
                    return
                with self._lock:
                    self._stored = min(n, len(self._records))
                if n < start + len(records):
                    self._wake.set()  # the store holds fewer entries than we thought: again
            if progress is not None:
                if not self.store.update_running(self.job_id, self.owner, progress=progress):
                    self._refused()
                    return
                with self._lock:
                    if self._progress is progress:
                        self._progress = None

    def _refused(self) -> None:
        """The store refused a fenced write: the lease is no longer ours."""
        with self._lock:
            self._closed = True
            self._progress = None
        self.lease.mark_lost()

    def stop(self) -> None:
        self._stop_event.set()
        self._wake.set()

    # --- the end of the job ----------------------------------------------------------------
    def drain(self) -> None:
        """Write every buffered epoch record now, retrying while the lease is ours. Raises
        LeaseLost when it is not (or no longer surely) ours."""
        while True:
            self.retrying(self.flush)
            with self._lock:
                if self._closed or self._stored >= len(self._records):
                    break
        if not self.lease.held():
            raise LeaseLost(self.job_id)

    def retrying(self, write: Callable[[], T]) -> T:
        """Run a store write until it goes through; raise LeaseLost once the lease is not
        surely ours any more (the sweeper then hands the job to another worker)."""
        delay = RETRY_MIN_S
        while True:
            if not self.lease.held():
                raise LeaseLost(self.job_id)
            try:
                return write()
            except self.store.transient_errors:
                log.warning("job %s: the job store is unreachable; retrying in %.1fs",
                            self.job_id, delay)
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    def finish(self, to: str, allowed_from: frozenset[str] = frozenset({RUNNING}),
               **fields: Any) -> bool:
        """The job's last transition by this process, after all its epoch records. False if
        the record had moved on without us (e.g. another worker owns the job now)."""
        self.drain()
        with self._write_lock:
            with self._lock:
                self._closed = True  # nothing buffered may land after the final state
                self._progress = None
            tried = [False]

            def write() -> bool:
                if tried[0]:
                    # The first try may have landed with its reply lost: read before writing.
                    job = self.store.get(self.job_id)
                    if job is not None and job.status == to and job.worker == self.owner:
                        return True
                tried[0] = True
                return self.store.transition(self.job_id, allowed_from, to, owner=self.owner,
                                             **fields)

            return self.retrying(write)

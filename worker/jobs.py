"""Durable job records, kept apart from Celery's results (which expire).

A record says what a job is (dataset, config), where it stands (status, progress, error,
timestamps, attempts, published version) and who runs it (a lease renewed by a heartbeat: a
job whose lease lapsed has lost its worker). Two stores implement the same contract: Redis in
production, SQLite for the embedded default.
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

QUEUED, RUNNING, SUCCEEDED = "queued", "running", "succeeded"
FAILED, CANCELED = "failed", "canceled"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED})


class JobNotFound(KeyError):
    pass


@dataclass
class Job:
    id: str
    dataset: str
    config: dict[str, Any]
    status: str = QUEUED
    progress: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    note: str | None = None  # what happened besides the status (e.g. resumed after a lost worker)
    model_version: str | None = None
    promote: bool = True  # make the published bundle current
    attempts: int = 0
    worker: str | None = None
    cancel_requested: bool = False
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = field(default_factory=time.time)
    heartbeat_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def new(cls, dataset: str, config: dict[str, Any], promote: bool = True) -> Job:
        return cls(id=uuid.uuid4().hex, dataset=dataset, config=dict(config), promote=promote)


# Fields a store serialises as JSON; the rest are scalars.
JSON_FIELDS = ("config", "progress")


class JobStore(ABC):
    """The contract both stores keep. Every status change is a compare-and-set."""

    @abstractmethod
    def create(self, job: Job) -> Job: ...

    @abstractmethod
    def get(self, job_id: str) -> Job | None: ...

    @abstractmethod
    def list(self, offset: int = 0, limit: int = 50,
             status: str | None = None) -> tuple[list[Job], int]:
        """Newest first; (page, total matching)."""

    @abstractmethod
    def update(self, job_id: str, **fields: Any) -> None:
        """Set fields without looking at the status (progress, heartbeat, note)."""

    @abstractmethod
    def transition(self, job_id: str, allowed_from: set[str] | frozenset[str], to: str,
                   **fields: Any) -> bool:
        """Set status `to` (and fields) only if the status is one of `allowed_from`."""

    @abstractmethod
    def append_history(self, job_id: str, record: dict[str, Any]) -> None: ...

    @abstractmethod
    def history(self, job_id: str) -> list[dict[str, Any]]: ...

    # --- leases: who runs a job ---------------------------------------------------------
    @abstractmethod
    def acquire(self, job_id: str, owner: str, ttl_s: float) -> bool:
        """Take the job's lease if nobody holds a live one."""

    @abstractmethod
    def renew(self, job_id: str, owner: str, ttl_s: float) -> bool:
        """Extend our lease; False if it lapsed and someone else may hold it."""

    @abstractmethod
    def release(self, job_id: str, owner: str) -> None: ...

    @abstractmethod
    def lease_holder(self, job_id: str) -> str | None: ...

    @abstractmethod
    def ping(self) -> None:
        """Raise if the store cannot be reached."""

    # --- shared logic ---------------------------------------------------------------------
    def require(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def request_cancel(self, job_id: str) -> Job:
        """Queued: canceled at once (it will never start). Running: flagged; the training loop
        stops at the next batch and the job ends as canceled. Finished: unchanged."""
        self.require(job_id)
        now = time.time()
        if self.transition(job_id, {QUEUED}, CANCELED, cancel_requested=True, finished_at=now,
                           updated_at=now):
            return self.require(job_id)
        job = self.require(job_id)
        if job.status == RUNNING:
            self.update(job_id, cancel_requested=True)
        return self.require(job_id)

    def counts(self) -> dict[str, int]:
        return {s: self.list(0, 1, s)[1] for s in STATUSES}

    def lost_jobs(self) -> list[Job]:
        """Running jobs whose lease has lapsed: their worker is gone."""
        running, _ = self.list(0, 10_000, RUNNING)
        return [job for job in running if self.lease_holder(job.id) is None]


def open_store(settings: Any) -> JobStore:
    """Redis when the broker is Redis, SQLite (under STATE_ROOT) otherwise."""
    if settings.uses_redis:
        from worker.store_redis import RedisJobStore

        return RedisJobStore(settings.broker_url, settings.key_prefix)
    from worker.store_sqlite import SqliteJobStore

    settings.state_root.mkdir(parents=True, exist_ok=True)
    return SqliteJobStore(settings.state_root / "jobs.sqlite3")

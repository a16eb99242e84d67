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
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field
from typing import Any, ClassVar

QUEUED, RUNNING, SUCCEEDED = "queued", "running", "succeeded"
FAILED, CANCELED = "failed", "canceled"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED})
# What a finished job's model becomes: current when the promotion gate measures a gain
# (worker/gate.py), current whatever it measured, or never current (a candidate).
PROMOTE_GATE, PROMOTE_ALWAYS, PROMOTE_NEVER = "gate", "always", "never"
PROMOTE_POLICIES = (PROMOTE_GATE, PROMOTE_ALWAYS, PROMOTE_NEVER)


# Aliases for annotations inside the store classes, whose `list` method shadows the builtin.
Records = list[dict[str, Any]]
Jobs = list["Job"]


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
    promote: str = PROMOTE_GATE  # one of PROMOTE_POLICIES
    attempts: int = 0
    worker: str | None = None
    cancel_requested: bool = False
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = field(default_factory=time.time)
    heartbeat_at: float | None = None
    enqueued_at: float | None = None  # last time a message for it was sent (None: at creation)
    # Past the point of no return: the bundle is written and about to become current. Set by
    # the worker only while no cancel is requested, and a cancel is accepted only while it is
    # unset (each is a compare-and-set on the other), so a canceled job never becomes current.
    committed: bool = False
    gate: dict[str, Any] = field(default_factory=dict)  # the promotion gate's verdict

    def __post_init__(self) -> None:
        # Records written before the policies existed hold a bool: true meant "make current".
        if isinstance(self.promote, (bool, int)):
            self.promote = PROMOTE_ALWAYS if self.promote else PROMOTE_NEVER

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def new(cls, dataset: str, config: dict[str, Any], promote: str = PROMOTE_GATE) -> Job:
        return cls(id=uuid.uuid4().hex, dataset=dataset, config=dict(config), promote=promote)


# Fields a store serialises as JSON; the rest are scalars.
JSON_FIELDS = ("config", "progress", "gate")


def field_default(name: str) -> Any:
    """A scalar field's default: what a record written before the field existed holds."""
    default = Job.__dataclass_fields__[name].default
    if default is MISSING:
        raise KeyError(f"job field {name!r} has no scalar default")
    return default


class JobStore(ABC):
    """The contract both stores keep. Every status change is a compare-and-set.

    A worker writes a job's record only while it holds the job's lease: its writes name the
    `owner`, and the store checks the lease in the same atomic step as the write (a fencing
    check), so a worker that stalled past its lease while another took the job over writes
    nothing, whatever it believes.
    """

    # Errors that mean "the store could not be reached just now": worth retrying.
    transient_errors: ClassVar[tuple[type[Exception], ...]] = (ConnectionError,
                                                                   TimeoutError)

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
    def transition(self, job_id: str, allowed_from: set[str] | frozenset[str], to: str, *,
                   owner: str | None = None, unleased: bool = False,
                   when: Mapping[str, Any] | None = None, **fields: Any) -> bool:
        """Set status `to` (and fields) only if the status is one of `allowed_from` and, in the
        same atomic step: `owner` holds the job's lease (when given); nobody holds a live lease
        (when `unleased`); every field in `when` has that value (a record written before the
        field existed counts as holding its default)."""

    @abstractmethod
    def append_history(self, job_id: str, record: dict[str, Any]) -> None: ...

    @abstractmethod
    def extend_history(self, job_id: str, start: int, records: Records, *,
                       owner: str | None = None) -> int | None:
        """Write records[i] as history entry `start + i` where that entry is the next one:
        entries already there are kept, so a retried write or a resumed worker never records
        an epoch twice, and a gap is never made. Returns the number of entries after the call
        (less than `start` when entries are missing: send again from there), or None when
        `owner` does not hold the lease (nothing written)."""

    @abstractmethod
    def history(self, job_id: str) -> Records: ...

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
    def advertise_capacity(self, worker: str, gpus: int, ttl_s: float) -> None:
        """`worker` owns `gpus` GPUs, for the next ttl_s seconds."""

    @abstractmethod
    def largest_capacity(self) -> int:
        """The most GPUs any live worker has advertised (0: none)."""

    # --- a dataset's retrain policy (state/retrain.py gives it its shape) -------------------
    @abstractmethod
    def get_policy(self, dataset: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def put_policy(self, dataset: str, policy: dict[str, Any]) -> None: ...

    # --- a collection's read key, as its digest (state/collection_keys.py) -----------------
    @abstractmethod
    def get_key_digest(self, collection: str) -> str | None: ...

    @abstractmethod
    def put_key_digest(self, collection: str, digest: str) -> None: ...

    @abstractmethod
    def delete_key_digest(self, collection: str) -> bool:
        """Remove the collection's key; whether it had one."""

    @abstractmethod
    def ping(self) -> None:
        """Raise if the store cannot be reached."""

    # --- shared logic ---------------------------------------------------------------------
    def require(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def update_running(self, job_id: str, owner: str, **fields: Any) -> bool:
        """Fields of a running job (progress, heartbeat), written only while `owner` holds
        its lease."""
        return self.transition(job_id, {RUNNING}, RUNNING, owner=owner, **fields)

    def request_cancel(self, job_id: str) -> Job:
        """Queued: canceled at once (it will never start). Running: flagged; the job stops at
        the next batch or between its last phases and ends as canceled, unless it has already
        committed to publishing (then the flag is not set: check `cancel_requested`).
        Finished: unchanged."""
        self.require(job_id)
        now = time.time()
        if self.transition(job_id, {QUEUED}, CANCELED, cancel_requested=True, finished_at=now,
                           updated_at=now):
            return self.require(job_id)
        self.transition(job_id, {RUNNING}, RUNNING, when={"committed": False},
                        cancel_requested=True)
        return self.require(job_id)

    def counts(self) -> dict[str, int]:
        return {s: self.list(0, 1, s)[1] for s in STATUSES}

    def lost_jobs(self) -> Jobs:
        """Running jobs whose lease has lapsed: their worker is gone."""
        running, _ = self.list(0, 10_000, RUNNING)
        return [job for job in running if self.lease_holder(job.id) is None]

    def waiting_jobs(self, older_than_s: float) -> Jobs:
        """Queued jobs nobody holds whose last message was sent more than `older_than_s` ago:
        their message may have been lost."""
        queued, _ = self.list(0, 10_000, QUEUED)
        cutoff = time.time() - older_than_s
        return [job for job in queued if (job.enqueued_at or job.updated_at) < cutoff
                and self.lease_holder(job.id) is None]

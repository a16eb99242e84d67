"""The change log of a dataset's live collection: items added, replaced and deleted after a
model was published, in one order that every API replica and every job applies the same way.

An entry is `seq, op (add | delete), id, label, path (the image in the dataset), vector, model
version of the vector, time`. Sequence numbers are per dataset and increase by one per entry. A
request's entries are appended in one atomic step, after the existence checks that decide 409
and 404, so a request is in the log entirely or not at all, and two writers can never both add
the same id. Beside the log, the store keeps each touched id's latest state, for those checks and
for `GET /items/{id}`.

An append may carry the request's token (one per HTTP request). The token is recorded with the
entries, in the same atomic step, and an append whose token is already recorded appends nothing
and returns the seqs the first one got: a request retried after its reply was lost (the
connection dropped during Redis's EXEC) succeeds once, instead of conflicting with itself.
Tokens are kept for TOKEN_TTL_S.

Two backends keep this contract: Redis (`state/changes_redis.py`) and SQLite for the embedded
default (`state/changes_sqlite.py`).
"""

from __future__ import annotations

import base64
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

ADD, DELETE = "add", "delete"
TOKEN_TTL_S = 86_400  # far longer than any retry of one request


class ChangeConflict(Exception):
    """An add of an id that exists (without upsert), or a delete of one that does not."""

    def __init__(self, item: str, exists: bool) -> None:
        self.item, self.exists = item, exists
        super().__init__(f"item {item!r} {'already exists' if exists else 'does not exist'}")


@dataclass
class Change:
    op: str
    id: str
    label: str | None = None
    path: str | None = None  # image file, relative to the dataset root
    vector: np.ndarray | None = None  # unit vector made by `version`
    version: str | None = None
    at: float = field(default_factory=time.time)
    seq: int = 0  # set by the log

    def payload(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("seq")
        data["vector"] = None if self.vector is None else base64.b64encode(
            np.ascontiguousarray(self.vector, dtype=np.float32).tobytes()).decode()
        return data

    @classmethod
    def from_payload(cls, seq: int, data: dict[str, Any]) -> Change:
        raw = data.get("vector")
        vector = None if raw is None else np.frombuffer(base64.b64decode(raw), dtype=np.float32)
        return cls(op=data["op"], id=data["id"], label=data.get("label"),
                   path=data.get("path"), vector=vector, version=data.get("version"),
                   at=data.get("at", 0.0), seq=seq)

    def state(self) -> dict[str, Any]:
        """What the store remembers of an id after this change (no vector)."""
        return {"state": "live" if self.op == ADD else "deleted", "label": self.label,
                "path": self.path, "version": self.version, "at": self.at, "seq": self.seq}


class ChangeLog(ABC):
    @abstractmethod
    def append(self, dataset: str, changes: list[Change], known: dict[str, bool],
               upsert: bool = False, token: str | None = None) -> list[Change]:
        """Append `changes` atomically and return them with their sequence numbers.

        `known[id]` says whether the id is in the caller's published snapshot (the bundle); the
        log's own record of an id overrides it. Raises ChangeConflict, appending nothing, when
        an add names a live id (unless `upsert`) or a delete names an id that is not live.
        When `token` was recorded by an earlier append (of the same request), nothing is
        appended and `changes` come back with the seqs that append gave them.
        """

    @abstractmethod
    def since(self, dataset: str, after: int, limit: int = 10_000) -> list[Change]:
        """Entries with seq > `after`, in order, at most `limit`."""

    @abstractmethod
    def last_seq(self, dataset: str) -> int:
        """The newest entry's seq (0 when the log is empty)."""

    @abstractmethod
    def item_state(self, dataset: str, item: str) -> dict[str, Any] | None:
        """The latest state the log holds for an id (see Change.state), or None."""

    def changes_between(self, dataset: str, after: int, upto: int) -> list[Change]:
        out: list[Change] = []
        while after < upto:
            page = [c for c in self.since(dataset, after) if c.seq <= upto]
            if not page:
                break
            out.extend(page)
            after = page[-1].seq
        return out


def check(changes: list[Change], known: dict[str, bool],
          recorded: dict[str, dict[str, Any] | None], upsert: bool) -> None:
    """The 409/404 rule, shared by both backends (each runs it inside its atomic step)."""
    live = {}
    for change in changes:
        state = recorded.get(change.id)
        exists = live.get(change.id, state["state"] == "live" if state else
                          known.get(change.id, False))
        if change.op == ADD and exists and not upsert:
            raise ChangeConflict(change.id, True)
        if change.op == DELETE and not exists:
            raise ChangeConflict(change.id, False)
        live[change.id] = change.op == ADD


def numbered(changes: list[Change], first: int) -> list[Change]:
    """`changes` with consecutive seqs from `first` (how one append numbers its entries)."""
    for offset, change in enumerate(changes):
        change.seq = first + offset
    return changes

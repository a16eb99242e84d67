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

An entry that cannot be read (damaged, or written by a newer format) is set aside, not raised:
readers get the entries around it, the page they read names it (`ChangePage.set_aside`) and
the store records its problem once (`ChangeLog.set_aside`), so one bad entry stalls no replica
and breaks no model version.

Compaction (`ChangeLog.compact(dataset, upto)`) keeps, among the entries up to `upto`, only
each id's last one: an add later replaced or deleted, or a delete later undone by an add, is
dropped. Every reader applies entries in order and keeps each id's last state, so replaying the
compacted log from any position gives the collection that replaying the whole log gave at every
position from `upto` on: a replica or a version loaded later rebuilds the same collection, and
so does a job whose snapshot is at `upto` or after (the floor of a compaction is the lowest
snapshot still needed: worker/live.py). Deletes stay (an id of the dataset's own files deleted
must stay deleted), entries that cannot be read stay (their id is unknown), seqs never change,
and the newest entry is always an id's last: the log's position is kept.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from trainer import unit_vectors

log = logging.getLogger(__name__)
ADD, DELETE = "add", "delete"
TOKEN_TTL_S = 86_400  # far longer than any retry of one request


class EntryProblem(ValueError):
    """A log entry this code cannot apply: it is set aside."""


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
    def from_payload(cls, seq: int, data: Any) -> Change:
        """The entry `data` describes; EntryProblem when it is not one this code can apply."""
        if not isinstance(data, dict):
            raise EntryProblem(f"entry {seq} is not an object")
        op, item, at = data.get("op"), data.get("id"), data.get("at", 0.0)
        if op not in (ADD, DELETE):
            raise EntryProblem(f"entry {seq} has an unknown op {op!r}")
        if not isinstance(item, str) or not item:
            raise EntryProblem(f"entry {seq} names no item id")
        for key in ("label", "path", "version"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise EntryProblem(f"entry {seq}: {key} is not a string")
        if isinstance(at, bool) or not isinstance(at, (int, float)):
            raise EntryProblem(f"entry {seq}: at is not a time")
        return cls(op=op, id=item, label=data.get("label"), path=data.get("path"),
                   vector=_vector(seq, data.get("vector")), version=data.get("version"),
                   at=float(at), seq=seq)

    def state(self) -> dict[str, Any]:
        """What the store remembers of an id after this change (no vector)."""
        return {"state": "live" if self.op == ADD else "deleted", "label": self.label,
                "path": self.path, "version": self.version, "at": self.at, "seq": self.seq}


def _vector(seq: int, raw: Any) -> np.ndarray | None:
    if raw is None:
        return None
    try:
        data = base64.b64decode(raw, validate=True) if isinstance(raw, str) else None
    except (binascii.Error, ValueError):
        data = None
    if not data or len(data) % 4:
        raise EntryProblem(f"entry {seq}: its vector is not base64 float32 numbers")
    vector = np.frombuffer(data, dtype=np.float32)
    if len(unit_vectors.off_unit_rows(vector[None, :])):
        # The image is what the entry adds; a vector no encoder could have made is dropped, and
        # whoever applies the entry embeds the image again (service/live_view.py).
        log.warning("entry %d: its vector is not a finite unit vector; the item's image "
                    "will be embedded again", seq)
        return None
    return vector


def parse_entry(seq: int, raw: str | bytes) -> Change:
    """A stored entry (JSON; Redis's also holds its seq, which the score gives too)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise EntryProblem(f"entry {seq} is not JSON") from None
    return Change.from_payload(seq, data)


def parse_state(dataset: str, item: str, raw: str | bytes | None) -> dict[str, Any] | None:
    """An id's stored state (see Change.state); a damaged one reads as none recorded."""
    if not raw:
        return None
    try:
        state = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        state = None
    if not isinstance(state, dict):
        log.error("change log of dataset %r: the state of item %r is damaged", dataset, item)
        return None
    return state


@dataclass(frozen=True)
class SetAside:
    seq: int
    problem: str


class ChangePage(list[Change]):
    """Entries read from a log, in order. `set_aside`: the entries read that could not be
    (skipped); `last_read`: the highest seq read, good or not, where a reader goes on from."""

    def __init__(self, last_read: int) -> None:
        super().__init__()
        self.set_aside: list[SetAside] = []
        self.last_read = last_read


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
    def _rows(self, dataset: str, after: int, limit: int) -> list[tuple[int, str | bytes]]:
        """Stored entries (seq, raw) with seq > `after`, in order, at most `limit`."""

    @abstractmethod
    def _record_set_aside(self, dataset: str, seq: int, problem: str) -> None:
        """Remember entry `seq`'s problem (the first one recorded stays)."""

    @abstractmethod
    def set_aside(self, dataset: str) -> dict[int, str]:
        """The entries set aside so far, seq -> problem."""

    def since(self, dataset: str, after: int, limit: int = 10_000) -> ChangePage:
        """Entries with seq > `after`, in order, at most `limit` read per step. Entries that
        cannot be read are set aside; past a step of nothing but those, reading goes on until
        a good entry or the end of the log, so an empty page means the end."""
        page = ChangePage(after)
        while True:
            rows = self._rows(dataset, page.last_read, limit)
            for seq, raw in rows:
                try:
                    page.append(parse_entry(seq, raw))
                except EntryProblem as exc:
                    page.set_aside.append(SetAside(seq, str(exc)))
                    self._note_set_aside(dataset, seq, str(exc))
                page.last_read = seq
            if page or len(rows) < limit:
                return page

    def _note_set_aside(self, dataset: str, seq: int, problem: str) -> None:
        noted = self.__dict__.setdefault("_noted", set())
        if (dataset, seq) in noted:
            return
        log.error("change log of dataset %r: %s; the entry is set aside", dataset, problem)
        try:
            self._record_set_aside(dataset, seq, problem)
        except Exception:  # a store blip: recorded when it is read again
            log.exception("recording the problem of entry %d of %r failed", seq, dataset)
            return
        noted.add((dataset, seq))

    @abstractmethod
    def last_seq(self, dataset: str) -> int:
        """The newest entry's seq (0 when the log is empty)."""

    @abstractmethod
    def item_state(self, dataset: str, item: str) -> dict[str, Any] | None:
        """The latest state the log holds for an id (see Change.state), or None."""

    @abstractmethod
    def _drop(self, dataset: str, seqs: list[int]) -> None:
        """Remove the entries `seqs` in one atomic step."""

    def compact(self, dataset: str, upto: int, chunk: int = 1000) -> list[Change]:
        """Drop the entries with seq <= `upto` that a later entry of the same id (also <=
        `upto`) supersedes; returns them, without vectors, once their removal committed. Any
        subset of them dropped leaves a valid log too, so the drops commit a chunk at a time."""
        last: dict[str, int] = {}
        seen: list[Change] = []
        after = 0
        while after < upto:
            rows = self._rows(dataset, after, chunk)
            for seq, raw in rows:
                if seq > upto:
                    break
                try:
                    change = parse_entry(seq, raw)
                except EntryProblem:
                    continue  # set aside, and kept: its id is unknown
                change.vector = None
                seen.append(change)
                last[change.id] = seq
            if len(rows) < chunk or rows[-1][0] >= upto:
                break
            after = rows[-1][0]
        superseded = [c for c in seen if last[c.id] != c.seq]
        for start in range(0, len(superseded), chunk):
            self._drop(dataset, [c.seq for c in superseded[start:start + chunk]])
        return superseded

    def image_paths(self, dataset: str, chunk: int = 1000) -> set[str]:
        """The images the log's adds name (read without decoding a vector)."""
        paths: set[str] = set()
        after = 0
        while True:
            rows = self._rows(dataset, after, chunk)
            for _, raw in rows:
                try:
                    data = json.loads(raw)
                except (ValueError, UnicodeDecodeError):
                    continue
                if isinstance(data, dict) and data.get("op") == ADD and isinstance(
                        data.get("path"), str):
                    paths.add(data["path"])
            if len(rows) < chunk:
                return paths
            after = rows[-1][0]

    def changes_between(self, dataset: str, after: int, upto: int) -> list[Change]:
        out: list[Change] = []
        while after < upto:
            page = self.since(dataset, after)
            out.extend(c for c in page if c.seq <= upto)
            if page.last_read <= after:
                break
            after = page.last_read
        return out


def check(changes: list[Change], known: dict[str, bool],
          recorded: dict[str, dict[str, Any] | None], upsert: bool) -> None:
    """The 409/404 rule, shared by both backends (each runs it inside its atomic step)."""
    live: dict[str, bool] = {}
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

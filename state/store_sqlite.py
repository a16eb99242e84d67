"""Job records in SQLite for the embedded default: one file under STATE_ROOT shared by the API
and the worker processes of one machine (WAL mode; every status change is one conditional
UPDATE, so it is atomic across processes)."""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from state.jobs import JSON_FIELDS, Job, JobStore, Records, field_default
from state.sqlite import Connections

_COLUMNS = [f for f in Job.__dataclass_fields__]
_BOOLS = [f for f in _COLUMNS if isinstance(Job.__dataclass_fields__[f].default, bool)]

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    {", ".join(f"{c} {'TEXT PRIMARY KEY' if c == 'id' else ''}" for c in _COLUMNS)}
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_at);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
CREATE TABLE IF NOT EXISTS history (job_id TEXT, seq INTEGER PRIMARY KEY AUTOINCREMENT,
                                    record TEXT);
CREATE INDEX IF NOT EXISTS history_job ON history (job_id, seq);
CREATE TABLE IF NOT EXISTS leases (job_id TEXT PRIMARY KEY, owner TEXT, expires REAL);
CREATE TABLE IF NOT EXISTS capacity (worker TEXT PRIMARY KEY, gpus INTEGER, expires REAL);
CREATE TABLE IF NOT EXISTS policies (dataset TEXT PRIMARY KEY, policy TEXT);
CREATE TABLE IF NOT EXISTS collection_keys (collection TEXT PRIMARY KEY, digest TEXT);
"""


class SqliteJobStore(JobStore):
    transient_errors = (sqlite3.OperationalError,)  # locked, busy, disk I/O

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._connections = Connections(self.path, rows=sqlite3.Row)
        with self._db() as db:
            db.executescript(_SCHEMA)
            self._add_new_columns(db)

    @staticmethod
    def _add_new_columns(db: sqlite3.Connection) -> None:
        """A table made by an older version lacks the newer fields: add them (NULL in old rows
        reads as the field's default)."""
        have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        for column in (c for c in _COLUMNS if c not in have):
            try:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {column}")
            except sqlite3.OperationalError as exc:  # another process added it just now
                if "duplicate column" not in str(exc):
                    raise

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        yield self._connections.get()

    @staticmethod
    def _row(row: sqlite3.Row) -> Job:
        values = dict(row)
        for name in JSON_FIELDS:
            values[name] = json.loads(values[name]) if values[name] else {}
        for name in _BOOLS:
            values[name] = field_default(name) if values[name] is None else bool(values[name])
        return Job(**values)

    @staticmethod
    def _value(key: str, value: Any) -> Any:
        return json.dumps(value) if key in JSON_FIELDS else value

    def create(self, job: Job) -> Job:
        data = job.to_dict()
        with self._db() as db:
            db.execute(
                f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES "
                f"({', '.join('?' for _ in _COLUMNS)})",
                [self._value(c, data[c]) for c in _COLUMNS],
            )
        return job

    def get(self, job_id: str) -> Job | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._row(row) if row else None

    def list(self, offset: int = 0, limit: int = 50,
             status: str | None = None) -> tuple[list[Job], int]:
        where, args = ("WHERE status = ?", [status]) if status else ("", [])
        with self._db() as db:
            total = db.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]
            rows = db.execute(
                f"SELECT * FROM jobs {where} ORDER BY created_at DESC LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return [self._row(r) for r in rows], int(total)

    def _set(self, fields: dict[str, Any]) -> tuple[str, builtins.list[Any]]:
        unknown = set(fields) - set(_COLUMNS)
        if unknown:
            raise KeyError(f"unknown job fields {sorted(unknown)}")
        return ", ".join(f"{k} = ?" for k in fields), [self._value(k, v) for k, v in
                                                       fields.items()]

    def update(self, job_id: str, **fields: Any) -> None:
        fields.setdefault("updated_at", time.time())
        sql, args = self._set(fields)
        with self._db() as db:
            db.execute(f"UPDATE jobs SET {sql} WHERE id = ?", [*args, job_id])

    def transition(self, job_id: str, allowed_from: set[str] | frozenset[str], to: str, *,
                   owner: str | None = None, unleased: bool = False,
                   when: Mapping[str, Any] | None = None, **fields: Any) -> bool:
        fields.setdefault("updated_at", time.time())
        sql, args = self._set({**fields, "status": to})
        allowed = sorted(allowed_from)
        where = [f"id = ? AND status IN ({', '.join('?' for _ in allowed)})"]
        where_args: list[Any] = [job_id, *allowed]
        now = time.time()
        if owner is not None:
            where.append("EXISTS (SELECT 1 FROM leases WHERE job_id = ? AND owner = ? "
                         "AND expires >= ?)")
            where_args += [job_id, owner, now]
        if unleased:
            where.append("NOT EXISTS (SELECT 1 FROM leases WHERE job_id = ? AND expires >= ?)")
            where_args += [job_id, now]
        for name, value in (when or {}).items():
            self._set({name: value})  # refuses unknown fields
            where.append(f"COALESCE({name}, ?) IS ?")
            where_args += [self._value(name, field_default(name)), self._value(name, value)]
        # One statement: the conditions and the write are atomic across processes.
        with self._db() as db:
            cur = db.execute(f"UPDATE jobs SET {sql} WHERE {' AND '.join(where)}",
                             [*args, *where_args])
        return cur.rowcount == 1

    def append_history(self, job_id: str, record: dict[str, Any]) -> None:
        with self._db() as db:
            db.execute("INSERT INTO history (job_id, record) VALUES (?, ?)",
                       (job_id, json.dumps(record)))

    def extend_history(self, job_id: str, start: int, records: Records, *,
                       owner: str | None = None) -> int | None:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")  # the check and the inserts in one transaction
            try:
                if owner is not None and db.execute(
                        "SELECT 1 FROM leases WHERE job_id = ? AND owner = ? AND expires >= ?",
                        (job_id, owner, time.time())).fetchone() is None:
                    db.execute("ROLLBACK")
                    return None
                n = db.execute("SELECT COUNT(*) FROM history WHERE job_id = ?",
                               (job_id,)).fetchone()[0]
                for i, record in enumerate(records):
                    if start + i == n:
                        db.execute("INSERT INTO history (job_id, record) VALUES (?, ?)",
                                   (job_id, json.dumps(record)))
                        n += 1
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return int(n)

    def history(self, job_id: str) -> Records:
        with self._db() as db:
            rows = db.execute("SELECT record FROM history WHERE job_id = ? ORDER BY seq",
                              (job_id,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def acquire(self, job_id: str, owner: str, ttl_s: float) -> bool:
        now = time.time()
        with self._db() as db:
            cur = db.execute(
                "INSERT INTO leases (job_id, owner, expires) VALUES (?, ?, ?) "
                "ON CONFLICT(job_id) DO UPDATE SET owner = excluded.owner, "
                "expires = excluded.expires WHERE leases.expires < ?",
                (job_id, owner, now + ttl_s, now),
            )
        return cur.rowcount == 1

    def renew(self, job_id: str, owner: str, ttl_s: float) -> bool:
        now = time.time()
        with self._db() as db:
            cur = db.execute(
                "UPDATE leases SET expires = ? WHERE job_id = ? AND owner = ? AND expires >= ?",
                (now + ttl_s, job_id, owner, now),
            )
        return cur.rowcount == 1

    def release(self, job_id: str, owner: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM leases WHERE job_id = ? AND owner = ?", (job_id, owner))

    def lease_holder(self, job_id: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT owner FROM leases WHERE job_id = ? AND expires >= ?",
                             (job_id, time.time())).fetchone()
        return row[0] if row else None

    def advertise_capacity(self, worker: str, gpus: int, ttl_s: float) -> None:
        now = time.time()
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO capacity (worker, gpus, expires) VALUES (?, ?, ?)",
                       (worker, gpus, now + ttl_s))
            db.execute("DELETE FROM capacity WHERE expires < ?", (now,))

    def largest_capacity(self) -> int:
        with self._db() as db:
            row = db.execute("SELECT MAX(gpus) FROM capacity WHERE expires >= ?",
                             (time.time(),)).fetchone()
        return int(row[0] or 0)

    def get_policy(self, dataset: str) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute("SELECT policy FROM policies WHERE dataset = ?",
                             (dataset,)).fetchone()
        return json.loads(row[0]) if row else None

    def put_policy(self, dataset: str, policy: dict[str, Any]) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO policies (dataset, policy) VALUES (?, ?)",
                       (dataset, json.dumps(policy)))

    def get_key_digest(self, collection: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT digest FROM collection_keys WHERE collection = ?",
                             (collection,)).fetchone()
        return row[0] if row else None

    def put_key_digest(self, collection: str, digest: str) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO collection_keys (collection, digest) "
                       "VALUES (?, ?)", (collection, digest))

    def delete_key_digest(self, collection: str) -> bool:
        with self._db() as db:
            return db.execute("DELETE FROM collection_keys WHERE collection = ?",
                              (collection,)).rowcount > 0

    def ping(self) -> None:
        with self._db() as db:
            db.execute("SELECT 1").fetchone()

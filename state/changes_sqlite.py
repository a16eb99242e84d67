"""The change log in SQLite for the embedded default: two tables in the job store's file. An
append is one IMMEDIATE transaction: the existence checks and the writes see one log. A
request's token is a row of a third table, written in that transaction with the first seq it
got; rows older than TOKEN_TTL_S are removed by later appends."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from state.changes import TOKEN_TTL_S, Change, ChangeLog, check, numbered, parse_state
from state.sqlite import Connections

_SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (dataset TEXT NOT NULL, seq INTEGER NOT NULL,
                                    payload TEXT NOT NULL, PRIMARY KEY (dataset, seq));
CREATE TABLE IF NOT EXISTS change_items (dataset TEXT NOT NULL, id TEXT NOT NULL,
                                         state TEXT NOT NULL, PRIMARY KEY (dataset, id));
CREATE TABLE IF NOT EXISTS change_requests (dataset TEXT NOT NULL, token TEXT NOT NULL,
                                            first_seq INTEGER NOT NULL, at REAL NOT NULL,
                                            PRIMARY KEY (dataset, token));
CREATE INDEX IF NOT EXISTS change_requests_at ON change_requests (at);
CREATE TABLE IF NOT EXISTS change_set_aside (dataset TEXT NOT NULL, seq INTEGER NOT NULL,
                                             problem TEXT NOT NULL, at REAL NOT NULL,
                                             PRIMARY KEY (dataset, seq));
"""


class SqliteChangeLog(ChangeLog):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._connections = Connections(self.path)
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        yield self._connections.get()

    def append(self, dataset: str, changes: list[Change], known: dict[str, bool],
               upsert: bool = False, token: str | None = None) -> list[Change]:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                done = None if token is None else db.execute(
                    "SELECT first_seq FROM change_requests WHERE dataset = ? AND token = ?",
                    (dataset, token)).fetchone()
                if done is not None:
                    db.execute("ROLLBACK")
                    return numbered(changes, int(done[0]))
                ids = list(dict.fromkeys(c.id for c in changes))
                recorded: dict[str, dict[str, Any] | None] = dict.fromkeys(ids)
                for start in range(0, len(ids), 500):
                    chunk = ids[start:start + 500]
                    rows = db.execute(
                        f"SELECT id, state FROM change_items WHERE dataset = ? AND id IN "
                        f"({', '.join('?' for _ in chunk)})", [dataset, *chunk]).fetchall()
                    recorded.update({i: json.loads(s) for i, s in rows})
                check(changes, known, recorded, upsert)
                last = db.execute("SELECT MAX(seq) FROM changes WHERE dataset = ?",
                                  (dataset,)).fetchone()[0] or 0
                numbered(changes, last + 1)
                db.executemany("INSERT INTO changes (dataset, seq, payload) VALUES (?, ?, ?)",
                               [(dataset, c.seq, json.dumps(c.payload())) for c in changes])
                db.executemany(
                    "INSERT INTO change_items (dataset, id, state) VALUES (?, ?, ?) "
                    "ON CONFLICT(dataset, id) DO UPDATE SET state = excluded.state",
                    [(dataset, c.id, json.dumps(c.state())) for c in changes])
                if token is not None and changes:
                    now = time.time()
                    db.execute("DELETE FROM change_requests WHERE at < ?", (now - TOKEN_TTL_S,))
                    db.execute("INSERT INTO change_requests (dataset, token, first_seq, at) "
                               "VALUES (?, ?, ?, ?)", (dataset, token, changes[0].seq, now))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return changes

    def _rows(self, dataset: str, after: int, limit: int) -> list[tuple[int, str | bytes]]:
        with self._db() as db:
            return db.execute("SELECT seq, payload FROM changes WHERE dataset = ? AND seq > ? "
                              "ORDER BY seq LIMIT ?", (dataset, after, limit)).fetchall()

    def _drop(self, dataset: str, seqs: list[int]) -> None:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(seqs), 500):
                    chunk = seqs[start:start + 500]
                    db.execute(f"DELETE FROM changes WHERE dataset = ? AND seq IN "
                               f"({', '.join('?' for _ in chunk)})", [dataset, *chunk])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _record_set_aside(self, dataset: str, seq: int, problem: str) -> None:
        with self._db() as db:
            db.execute("INSERT OR IGNORE INTO change_set_aside (dataset, seq, problem, at) "
                       "VALUES (?, ?, ?, ?)", (dataset, seq, problem, time.time()))

    def set_aside(self, dataset: str) -> dict[int, str]:
        with self._db() as db:
            rows = db.execute("SELECT seq, problem FROM change_set_aside WHERE dataset = ?",
                              (dataset,)).fetchall()
        return {int(seq): problem for seq, problem in rows}

    def last_seq(self, dataset: str) -> int:
        with self._db() as db:
            row = db.execute("SELECT MAX(seq) FROM changes WHERE dataset = ?",
                             (dataset,)).fetchone()
        return int(row[0] or 0)

    def item_state(self, dataset: str, item: str) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute("SELECT state FROM change_items WHERE dataset = ? AND id = ?",
                             (dataset, item)).fetchone()
        return parse_state(dataset, item, row[0] if row else None)

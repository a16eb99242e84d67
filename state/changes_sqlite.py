"""The change log in SQLite for the embedded default: two tables in the job store's file. An
append is one IMMEDIATE transaction: the existence checks and the writes see one log."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from state.changes import Change, ChangeLog, check
from state.sqlite import Connections

_SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (dataset TEXT NOT NULL, seq INTEGER NOT NULL,
                                    payload TEXT NOT NULL, PRIMARY KEY (dataset, seq));
CREATE TABLE IF NOT EXISTS change_items (dataset TEXT NOT NULL, id TEXT NOT NULL,
                                         state TEXT NOT NULL, PRIMARY KEY (dataset, id));
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
               upsert: bool = False) -> list[Change]:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
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
                for offset, change in enumerate(changes):
                    change.seq = last + 1 + offset
                db.executemany("INSERT INTO changes (dataset, seq, payload) VALUES (?, ?, ?)",
                               [(dataset, c.seq, json.dumps(c.payload())) for c in changes])
                db.executemany(
                    "INSERT INTO change_items (dataset, id, state) VALUES (?, ?, ?) "
                    "ON CONFLICT(dataset, id) DO UPDATE SET state = excluded.state",
                    [(dataset, c.id, json.dumps(c.state())) for c in changes])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return changes

    def since(self, dataset: str, after: int, limit: int = 10_000) -> list[Change]:
        with self._db() as db:
            rows = db.execute("SELECT seq, payload FROM changes WHERE dataset = ? AND seq > ? "
                              "ORDER BY seq LIMIT ?", (dataset, after, limit)).fetchall()
        return [Change.from_payload(seq, json.loads(payload)) for seq, payload in rows]

    def last_seq(self, dataset: str) -> int:
        with self._db() as db:
            row = db.execute("SELECT MAX(seq) FROM changes WHERE dataset = ?",
                             (dataset,)).fetchone()
        return int(row[0] or 0)

    def item_state(self, dataset: str, item: str) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute("SELECT state FROM change_items WHERE dataset = ? AND id = ?",
                             (dataset, item)).fetchone()
        return json.loads(row[0]) if row else None

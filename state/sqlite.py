"""Connections to the embedded default's SQLite file (job records and change log share it).

Every backend opens its connections here, so both make the same durability promise: WAL, so
the API and the worker processes read while one writes, and `synchronous=FULL`, so a commit is
on disk before it is acknowledged. NORMAL would be faster but, in WAL mode, lets a power loss
undo the last commits: a job the API answered 202 for, or a finished job's published model
version, would be gone, as would an acknowledged change to a live collection.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

BUSY_TIMEOUT_S = 30


class Connections:
    """One connection per thread and process to one SQLite file (a sqlite3 connection is not
    fork-safe, and one shared by threads would interleave their transactions)."""

    def __init__(self, path: str | os.PathLike[str], rows: type | None = None) -> None:
        self.path = Path(path)
        self._rows = rows  # a row factory, e.g. sqlite3.Row; None: tuples
        self._local = threading.local()

    def get(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # see the module's docstring
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
            if self._rows is not None:
                conn.row_factory = self._rows
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

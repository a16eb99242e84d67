"""Opening the stores a deployment uses: Redis when the broker is Redis, SQLite under
STATE_ROOT otherwise (the embedded default)."""

from __future__ import annotations

from typing import Any

from worker.changes import ChangeLog


def open_changes(settings: Any) -> ChangeLog:
    """The change log of live collections, in the same store as the job records."""
    if settings.uses_redis:
        from worker.changes_redis import RedisChangeLog

        return RedisChangeLog(settings.broker_url, settings.key_prefix)
    from worker.changes_sqlite import SqliteChangeLog

    settings.state_root.mkdir(parents=True, exist_ok=True)
    return SqliteChangeLog(settings.state_root / "jobs.sqlite3")

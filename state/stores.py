"""Choosing the stores for a deployment (kept apart from the contracts in state.jobs and
state.changes, which the stores import): Redis when the broker is Redis, SQLite under
STATE_ROOT otherwise (the embedded default)."""

from __future__ import annotations

from state.changes import ChangeLog
from state.jobs import JobStore
from state.settings import Settings


def open_store(settings: Settings) -> JobStore:
    """The job records."""
    if (url := settings.redis_url) is not None:
        from state.store_redis import RedisJobStore

        return RedisJobStore(url, settings.key_prefix)
    from state.store_sqlite import SqliteJobStore

    settings.state_root.mkdir(parents=True, exist_ok=True)
    return SqliteJobStore(settings.state_root / "jobs.sqlite3")


def open_changes(settings: Settings) -> ChangeLog:
    """The change log of live collections, in the same store as the job records."""
    if (url := settings.redis_url) is not None:
        from state.changes_redis import RedisChangeLog

        return RedisChangeLog(url, settings.key_prefix)
    from state.changes_sqlite import SqliteChangeLog

    settings.state_root.mkdir(parents=True, exist_ok=True)
    return SqliteChangeLog(settings.state_root / "jobs.sqlite3")

"""Choosing the stores for a deployment (kept apart from the contracts in worker.jobs and
worker.changes, which the stores import): Redis when the broker is Redis, SQLite under
STATE_ROOT otherwise (the embedded default)."""

from __future__ import annotations

from worker.changes import ChangeLog
from worker.jobs import JobStore
from worker.settings import Settings


def open_store(settings: Settings) -> JobStore:
    """The job records."""
    if settings.uses_redis:
        from worker.store_redis import RedisJobStore

        return RedisJobStore(settings.broker_url, settings.key_prefix)
    from worker.store_sqlite import SqliteJobStore

    settings.state_root.mkdir(parents=True, exist_ok=True)
    return SqliteJobStore(settings.state_root / "jobs.sqlite3")


def open_changes(settings: Settings) -> ChangeLog:
    """The change log of live collections, in the same store as the job records."""
    if settings.uses_redis:
        from worker.changes_redis import RedisChangeLog

        return RedisChangeLog(settings.broker_url, settings.key_prefix)
    from worker.changes_sqlite import SqliteChangeLog

    settings.state_root.mkdir(parents=True, exist_ok=True)
    return SqliteChangeLog(settings.state_root / "jobs.sqlite3")

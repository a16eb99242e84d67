"""Choosing the job store for a deployment (kept apart from the contract in worker.jobs, which
the stores import)."""

from __future__ import annotations

from worker.jobs import JobStore
from worker.settings import Settings


def open_store(settings: Settings) -> JobStore:
    """Redis when the broker is Redis, SQLite (under STATE_ROOT) otherwise."""
    if settings.uses_redis:
        from worker.store_redis import RedisJobStore

        return RedisJobStore(settings.broker_url, settings.key_prefix)
    from worker.store_sqlite import SqliteJobStore

    settings.state_root.mkdir(parents=True, exist_ok=True)
    return SqliteJobStore(settings.state_root / "jobs.sqlite3")

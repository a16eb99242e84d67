"""Readiness probes of the job store and the Celery broker, each answered from a cache of
PROBE_CACHE_S seconds, so that frequent /readyz calls cost neither a thread per call nor a
connection per call: the broker is checked over one long-lived connection."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from service.settings import ServiceSettings

log = logging.getLogger(__name__)
PROBE_CACHE_S = 5.0


class CachedProbe:
    def __init__(self, check: Callable[[], object], cache_s: float = PROBE_CACHE_S) -> None:
        self._check = check
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._ok: bool | None = None
        self._at = float("-inf")

    def cached(self) -> bool | None:
        """The last answer while it is fresh, else None (call `check`, in a thread)."""
        return self._ok if time.monotonic() - self._at < self.cache_s else None

    def check(self) -> bool:
        with self._lock:  # one probe at a time; the others take its answer
            fresh = self.cached()
            if fresh is not None:
                return fresh
            try:
                self._check()
                ok = True
            except Exception as exc:
                log.warning("readiness probe failed: %s", exc)
                ok = False
            self._ok, self._at = ok, time.monotonic()
            return ok


class BrokerConnection:
    """One kombu connection to the broker, opened on first use and reopened after a failure."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self._celery: Any = None
        self._conn: Any = None

    def __call__(self) -> None:
        try:
            if self._conn is None:
                if self._celery is None:
                    from worker.app import make_celery

                    self._celery = make_celery(self.settings)
                self._conn = self._celery.connection_for_write()
            self._conn.ensure_connection(max_retries=1, timeout=2)
            client = getattr(self._conn.default_channel, "client", None)
            if client is not None and hasattr(client, "ping"):
                client.ping()  # an open socket proves nothing once the server is gone
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.release()
            self._conn = None

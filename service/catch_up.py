"""Older versions follow the change log on demand, on the low-priority lane.

The current version follows its dataset's change log on the model-watch thread (every
MODEL_POLL_S) and at once for the writes made through it. The other loaded versions (pinned by
`?model_version=`, or current before a swap) are left alone there: re-embedding every added
image with each older model and rebuilding each one's index, every poll, would take the cores
from the current version's queries for versions nobody may ask for again. A request that names
an older version finds it caught up instead: when that version last caught up more than
MODEL_POLL_S ago (or a write went through it), the request waits while it does, on one thread
of low OS priority (BULK_NICE, the priority of collection adds' embedding), so queries of the
current version take the cores first. Requests arriving meanwhile wait for the same catch-up.
A pinned version thus answers with the collection every replica serves (within MODEL_POLL_S),
embedded by its own model; its answers name the log position they reflect (X-Changes-Seq).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from service.batcher import lower_thread_priority
from service.live_view import LiveView

log = logging.getLogger(__name__)


class SerialThread:
    """One daemon thread that runs calls in order (a call stuck on a slow disk never holds up
    the process's exit, as a thread pool's worker would), at a lower priority when `nice`."""

    def __init__(self, name: str, nice: int = 0, idle_s: float = 30.0) -> None:
        self.name, self.nice, self.idle_s = name, nice, idle_s
        self._queue: queue.Queue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = (
            queue.Queue())
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:  # with _run's exit check: a call is never left with no thread
            self._queue.put((future, fn, args))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        return future

    def _run(self) -> None:
        if self.nice:
            lower_thread_priority(self.nice)
        while True:
            try:
                future, fn, args = self._queue.get(timeout=self.idle_s)
            except queue.Empty:
                # Idle: end (a registry unloaded by the memory budget leaves no thread behind);
                # the next call starts another.
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to whoever waits for this call
                future.set_exception(exc)
            del future, fn, args  # hold nothing (a model) while waiting for the next call


class CatchUpLane:
    """Catch-ups of older versions' views, on demand, on one low-priority thread."""

    def __init__(self, max_age_s: float, nice: int) -> None:
        self.max_age_s = max_age_s
        self._thread = SerialThread("catch-up", nice)
        self._running: dict[LiveView, Future[None]] = {}
        self._lock = threading.Lock()

    def fresh(self, view: LiveView) -> bool:
        return time.monotonic() - view.caught_up_at < self.max_age_s

    async def caught_up(self, view: LiveView, force: bool = False) -> None:
        """Return once `view` has applied the log as it was at most max_age_s ago (with
        `force`: as it is now)."""
        if view.changes is None or not view.dataset or (not force and self.fresh(view)):
            return
        await asyncio.wrap_future(self._submit(view, force))

    def _submit(self, view: LiveView, force: bool) -> Future[None]:
        with self._lock:
            running = self._running.get(view)
            # A catch-up under way may have read the log before the write that forces one.
            if running is not None and not running.done() and not force:
                return running
            running = self._thread.submit(self._follow, view)
            self._running[view] = running
        # Outside the lock: a catch-up already done runs the callback here, at once.
        running.add_done_callback(lambda done: self._forget(view, done))
        return running

    def _forget(self, view: LiveView, done: Future[None]) -> None:
        with self._lock:
            if self._running.get(view) is done:
                del self._running[view]

    @staticmethod
    def _follow(view: LiveView) -> None:
        try:
            view.catch_up()
            view.rebuild_if_due()
        except Exception:  # a store blip: the answer names the position reached
            log.exception("catching up model %s with the change log failed",
                          view.bundle.version)

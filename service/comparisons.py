"""Comparisons of two model versions, computed once per pair and kept: bundles never change
after they are published, so neither does the answer for a pair.

A comparison runs on a worker thread, never on the event loop, one at a time per process (it
embeds up to 10,000 images twice and competes with queries for the CPU); requests for a pair
being computed wait for that same computation. A request that gives up does not stop it: the
next one finds the answer. At most CACHED answers are kept, the least recently used dropped
first; an answer measured without the dataset on disk is not kept, so that it is measured
again once the dataset is there.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

Answer = dict[str, Any]
CACHED = 32


class Comparisons:
    def __init__(self, cached: int = CACHED) -> None:
        self.cached = cached
        self._done: OrderedDict[tuple[str, str], Answer] = OrderedDict()
        self._running: dict[tuple[str, str], asyncio.Future[Answer]] = {}
        self._slot: asyncio.Lock | None = None  # made on the event loop that uses it

    def peek(self, key: tuple[str, str]) -> Answer | None:
        """The kept answer for `key`, if there is one."""
        done = self._done.get(key)
        if done is not None:
            self._done.move_to_end(key)
        return done

    async def get(self, key: tuple[str, str],
                  compute: Callable[[], tuple[Answer, bool]]) -> Answer:
        """The answer for `key`: kept, being computed, or computed now by `compute`
        (blocking; it returns the answer and whether it may be kept)."""
        done = self.peek(key)
        if done is not None:
            return done
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(self._compute(key, compute))
            self._running[key] = running
            running.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(running)

    def _finished(self, key: tuple[str, str], done: asyncio.Future[Answer]) -> None:
        self._running.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: nobody may be waiting any more (never logged)

    async def _compute(self, key: tuple[str, str],
                       compute: Callable[[], tuple[Answer, bool]]) -> Answer:
        if self._slot is None:
            self._slot = asyncio.Lock()
        async with self._slot:
            answer, keep = await run_in_threadpool(compute)
        if keep:
            self._done[key] = answer
            while len(self._done) > self.cached:
                self._done.popitem(last=False)
        return answer

    def __len__(self) -> int:
        return len(self._done)

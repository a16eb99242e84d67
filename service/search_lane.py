"""Index searches: on the thread pool, at most a few at once, first come first served.

FAISS releases the GIL while it scans, so searches run on the thread pool, off the event loop.
Handed to the pool as they come, 32 concurrent requests make 32 threads contend for 2 cores,
and which one runs next is luck: on exact `/neighbours` at 50,000 items and 32 clients, p50
was 68 ms and p99 223 ms. Here a search first waits on the event loop for one of
SLOTS_PER_CORE x cores slots (an asyncio.Semaphore wakes its waiters in the order they came),
which turns the contention into a queue: p50 70 ms and p99 82 ms, at the same throughput
(docs/benchmarks.md, "Serving: the cost of one request"). A lone search never waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from trainer.device import cpu_count

T = TypeVar("T")
# Two per core: one search computes while the next one's thread is handed its work (in the
# test above, one per core gave 392 requests/s, two 426-455, none 422-443).
SLOTS_PER_CORE = 2


class SearchLane:
    def __init__(self, slots: int | None = None) -> None:
        self.slots = slots or SLOTS_PER_CORE * cpu_count()
        self._free: asyncio.Semaphore | None = None  # made on the app's event loop

    async def run(self, search: Callable[..., T], *args: Any) -> T:
        if self._free is None:
            self._free = asyncio.Semaphore(self.slots)
        async with self._free:
            return await run_in_threadpool(search, *args)

"""Micro-batching of embedding work.

Requests put their decoded images on a queue and await a future; at most `max_queued_images`
images wait or run at once (past that a request is refused at once: Overloaded, 503). An
inference thread takes the first waiting request and everything already queued, then waits (at
most `max_wait_s`, up to `max_batch` images) only while its share of the recent load has not
arrived, and never for load that another thread's forward pass holds (it cannot come back
before that pass ends); it runs one forward pass per model version in the batch and hands
each request its rows. A lone request therefore never waits, and under load the model runs
large batches (its efficient regime) instead of many small ones; the event loop never runs
model code.

Collection writes (`POST /items`) have a batcher of their own whose threads run at a lower OS
priority (`nice`): a bulk add uses every idle cycle, but a query arriving meanwhile takes the
cores at once instead of queueing behind thousands of images, so adds at full speed leave
query latency nearly where it was (bench/live.py).

On CPU several inference threads each run single-threaded kernels (see `cpu_workers`): one
batch computes while the next is collected, and no OpenMP team waits on a core that the event
loop holds. On a 2-core machine that gives 350 images/s against 294 for one thread running
2-thread kernels (ResNet-18 at 32x32, batch 32). A batch that is all the work there is runs on
every core instead: the other threads would sit idle, and a lone request answers sooner.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from trainer.encoder_file import Embedder

log = logging.getLogger(__name__)
PEAK_WINDOW_S = 0.5
# Scheduling priority of the low-priority lane (0 normal, 19 lowest): the threads that embed
# collection adds and catch older versions up with the change log. Low enough that a query's
# threads win a core at once, while idle cores still run the lane.
BULK_NICE = 10


@dataclass
class _Work:
    model: Embedder
    images: torch.Tensor  # B x 3 x S x S uint8
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class Overloaded(Exception):
    pass


class _RecentLoad:
    """Images handed to the batcher and not yet answered (queued, being collected or computed),
    and the most seen at once lately: in the current window of PEAK_WINDOW_S and the one before
    it. The recent peak, not the current count, is the load: under a closed-loop load many
    clients are between requests (reading an answer, sending the next) at any moment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = 0
        self._computing = 0  # of the pending: in a forward pass now
        self._previous_peak = 0
        self._peak = 0
        self._window_end = 0.0

    def _roll(self, now: float) -> None:
        if now >= self._window_end:
            # The window that just ended counts as "previous" only if it ended recently.
            recent = now < self._window_end + PEAK_WINDOW_S
            self._previous_peak = self._peak if recent else 0
            self._peak = self._pending
            self._window_end = now + PEAK_WINDOW_S

    def add(self, n: int) -> None:
        with self._lock:
            self._pending += n
            self._roll(time.monotonic())
            self._peak = max(self._peak, self._pending)

    def try_add(self, n: int, limit: int) -> bool:
        """Add n images unless that passes `limit` (one request alone always fits)."""
        with self._lock:
            if self._pending and self._pending + n > limit:
                return False
            self._pending += n
            self._roll(time.monotonic())
            self._peak = max(self._peak, self._pending)
            return True

    def computing(self, n: int) -> None:
        """n images entered (n < 0: left) a forward pass."""
        with self._lock:
            self._computing += n

    def start_alone(self, n: int) -> bool:
        """n images enter a forward pass; True when they are all the work there is (no other
        pass runs, nothing else waits). Checked and counted at once, so that of two threads
        starting together at most one is told it is alone."""
        with self._lock:
            alone = self._computing == 0 and self._pending == n
            self._computing += n
            return alone

    @property
    def pending(self) -> int:
        return self._pending

    def still_to_come(self) -> int:
        """Images of the recent load outside every forward pass now: queued, being collected
        or on their way. A request inside a forward pass cannot come back before the pass
        ends, so a batch waiting for more than this waits for nothing."""
        return self.recent_peak() - self._computing

    def recent_peak(self) -> int:
        with self._lock:
            self._roll(time.monotonic())
            return max(self._pending, self._peak, self._previous_peak)


class EmbedBatcher:
    def __init__(self, max_batch: int = 64, max_wait_s: float = 0.01,
                 max_queued_images: int = 1024,
                 on_batch: Callable[[int], None] | None = None, workers: int = 1,
                 nice: int = 0, name: str = "embed-batcher") -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queued_images = max_queued_images
        self.on_batch = on_batch or (lambda n: None)
        self.workers = max(1, workers)
        self.nice, self.name = nice, name
        self._load = _RecentLoad()
        self._queue: queue.Queue[_Work | None] = queue.Queue()
        self._threads: list[threading.Thread] = []

    @property
    def pending_images(self) -> int:
        """Images queued or being embedded now."""
        return self._load.pending

    def start(self) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        for i in range(len(self._threads), self.workers):
            thread = threading.Thread(target=self._run, name=f"{self.name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        alive = [t for t in self._threads if t.is_alive()]
        for _ in alive:
            self._queue.put(None)  # one stop mark per thread
        for thread in alive:
            thread.join(timeout=10)

    async def embed(self, model: Embedder, images: torch.Tensor) -> np.ndarray:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        # Counted before it is queued: a thread may answer it before put_nowait returns. A
        # request larger than the bound on its own still runs when nothing else waits.
        if not self._load.try_add(images.shape[0], self.max_queued_images):
            raise Overloaded(f"more than {self.max_queued_images} images are waiting to be "
                             "embedded")
        self._queue.put_nowait(_Work(model, images, future, loop))
        return await future

    def _share(self) -> int:
        """This thread's fair share of the recent load: a batch waits for that many images at
        most, so no thread waits for images that are not coming or that another thread will
        take."""
        return -(-self._load.recent_peak() // self.workers)

    # --- inference thread -------------------------------------------------------------------
    def _next_batch(self, carry: _Work | None) -> tuple[list[_Work] | None, _Work | None]:
        """A batch, and the request that did not fit in it (it starts this thread's next)."""
        first = carry or self._queue.get()
        carry = None
        if first is None:
            return None, None
        batch, count = [first], first.images.shape[0]
        deadline = time.monotonic() + self.max_wait_s
        while count < self.max_batch:
            # Wait only for the share of pending images this thread should run; take at once
            # whatever is already queued. Under load, requests come back in bursts (one finished
            # batch answers many clients, whose next requests arrive one HTTP parse apart), so
            # a batch waits for its share instead of starting small and starving the cores;
            # but never for requests that another thread's forward pass holds.
            wanted = min(self._share(), self._load.still_to_come())
            remaining = deadline - time.monotonic() if count < wanted else 0
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else (
                    self._queue.get_nowait())
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)
                break
            if count + item.images.shape[0] > self.max_batch:
                carry = item
                break
            batch.append(item)
            count += item.images.shape[0]
        return batch, carry

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        if self.nice:
            lower_thread_priority(self.nice)
        if self.workers > 1:
            # Each thread's share of the cores. With OpenMP this is per calling thread: the
            # rest of the process keeps its own thread count.
            torch.set_num_threads(self._share_of_cores())
        carry: _Work | None = None
        while True:
            batch, carry = self._next_batch(carry)
            if batch is None:
                return
            # One forward pass per model version: a batch never mixes versions.
            by_model: dict[int, list[_Work]] = {}
            for work in batch:
                by_model.setdefault(id(work.model), []).append(work)
            for works in by_model.values():
                self._forward(works)

    def _share_of_cores(self) -> int:
        return max(1, len(os.sched_getaffinity(0)) // self.workers)

    def _forward(self, works: list[_Work]) -> None:
        total = sum(w.images.shape[0] for w in works)
        # Work that is all there is runs on every core: the other threads are idle, and a lone
        # request answers sooner (ResNet-18, one 32x32 image, on a 2-core AVX2 machine: 23 ms
        # against 31 on one core). Under load the threads keep single-core kernels, which pass
        # more images per second.
        wide = self._load.start_alone(total) and self.workers > 1
        try:
            if wide:
                torch.set_num_threads(len(os.sched_getaffinity(0)))
            images = torch.cat([w.images for w in works]) if len(works) > 1 else works[0].images
            vectors = works[0].model.embed_uint8(images)
            self.on_batch(images.shape[0])
        except Exception as exc:  # answered per request, never kills the thread
            log.exception("embedding batch failed")
            _hand_back(works, [exc] * len(works))
            return
        finally:
            if wide:
                torch.set_num_threads(self._share_of_cores())
            self._load.computing(-total)
            self._load.add(-total)
        rows, start = [], 0
        for w in works:
            n = w.images.shape[0]
            rows.append(vectors[start:start + n])
            start += n
        _hand_back(works, rows)


def lower_thread_priority(nice: int) -> None:
    """Lower the calling thread's scheduling priority (Linux schedules threads one by one; a
    process may always lower its own priority, never raise it back)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed: run at normal priority
        log.info("could not lower the priority of %s: %s", threading.current_thread().name, exc)


def cpu_workers(device: str) -> int:
    """Inference threads for a device setting: one per usable core on CPU (each then runs
    single-threaded kernels), one on CUDA (the GPU batches; more threads only queue there)."""
    if device != "cpu" and torch.cuda.is_available():
        return 1
    return max(1, len(os.sched_getaffinity(0)))


def _hand_back(works: list[_Work], outcomes: list[np.ndarray] | list[Exception]) -> None:
    """Each request's rows (or the batch's error), with one wake-up of each event loop per
    batch: a wake-up per request costs the loop a self-pipe read and a callback each, and a
    batch answers dozens of requests at once under load."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, object]]] = {}
    for work, outcome in zip(works, outcomes, strict=True):
        by_loop.setdefault(work.loop, []).append((work.future, outcome))
    for loop, answers in by_loop.items():
        loop.call_soon_threadsafe(_settle, answers)


def _settle(answers: list[tuple[asyncio.Future, object]]) -> None:
    for future, outcome in answers:
        if future.done():  # its request was cancelled (the client went away)
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

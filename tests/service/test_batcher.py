"""The embedding batcher on its own: batches fill up, every request gets its own rows, and
several inference threads stop cleanly."""

import asyncio
import os
import threading
import time

import numpy as np
import torch

from service.batcher import PEAK_WINDOW_S, EmbedBatcher


class RowSums:
    """A stand-in encoder that is easy to check by hand: each image's vector is its pixel sum."""

    def __init__(self) -> None:
        self.threads: set[str] = set()
        self.torch_threads: set[int] = set()

    def embed_uint8(self, images: torch.Tensor) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        self.torch_threads.add(torch.get_num_threads())
        return images.flatten(1).sum(1, keepdim=True).float().numpy()


def test_concurrent_requests_are_batched_and_each_gets_its_rows():
    model, sizes = RowSums(), []
    batcher = EmbedBatcher(max_batch=8, max_wait_s=0.05, on_batch=sizes.append, workers=2)
    batcher.start()
    main_threads = torch.get_num_threads()

    async def ask(i: int, n: int) -> np.ndarray:
        images = torch.full((n, 1, 2, 2), i, dtype=torch.uint8)
        return await batcher.embed(model, images)

    async def many():
        return await asyncio.gather(*(ask(i, 1 + i % 3) for i in range(40)))

    try:
        answers = asyncio.run(many())
    finally:
        batcher.stop()
    for i, rows in enumerate(answers):
        assert rows.shape == (1 + i % 3, 1) and (rows == 4 * i).all()
    assert sum(sizes) == sum(1 + i % 3 for i in range(40))
    assert max(sizes) <= 8 and len(sizes) < 40  # requests were grouped
    assert not any(t.is_alive() for t in batcher._threads)
    # Inference threads split the cores between them (a batch that is all the work there is
    # may take them all: the next test); the rest of the process keeps its own thread count.
    assert torch.get_num_threads() == main_threads
    cores = len(os.sched_getaffinity(0))
    assert max(1, cores // 2) in model.torch_threads <= {max(1, cores // 2), cores}


def test_work_that_is_all_there_is_runs_on_every_core_and_work_beside_other_work_on_a_share():
    cores = len(os.sched_getaffinity(0))
    share = max(1, cores // 2)
    release = threading.Event()
    seen: list[tuple[int, int]] = []  # (the request's pixel value, threads its forward had)

    class Held(RowSums):
        def embed_uint8(self, images: torch.Tensor) -> np.ndarray:
            seen.append((int(images[0, 0, 0, 0]), torch.get_num_threads()))
            if images[0, 0, 0, 0] == 1:
                release.wait(30)
            return super().embed_uint8(images)

    model = Held()
    batcher = EmbedBatcher(max_batch=8, max_wait_s=0.0, workers=2)
    batcher.start()

    def image(value: int) -> torch.Tensor:
        return torch.full((1, 1, 2, 2), value, dtype=torch.uint8)

    async def main() -> None:
        assert (await batcher.embed(model, image(5)) == 20).all()  # alone
        held = asyncio.ensure_future(batcher.embed(model, image(1)))  # alone, then held
        while len(seen) < 2:
            await asyncio.sleep(0.005)
        beside = await asyncio.wait_for(batcher.embed(model, image(2)), 30)  # the other thread
        release.set()
        assert (await held == 4).all() and (beside == 8).all()
        await batcher.embed(model, image(3))  # alone again, on whichever thread

    try:
        asyncio.run(main())
    finally:
        release.set()
        batcher.stop()
    assert seen == [(5, cores), (1, cores), (2, share), (3, cores)]
    assert model.torch_threads <= {share, cores}


def test_a_lone_request_never_waits_for_a_batch_to_fill():
    """Even with a max_wait of an hour, and also once an earlier burst of load has passed: a
    lone request that waited for its batch to fill would not be answered within the minute
    allowed here (a bound an hour away from the behaviour, not a speed claim)."""
    model, sizes = RowSums(), []
    batcher = EmbedBatcher(max_batch=64, max_wait_s=3600.0, on_batch=sizes.append, workers=1)
    batcher.start()
    one = torch.ones((1, 1, 2, 2), dtype=torch.uint8)

    async def lone() -> np.ndarray:
        return await asyncio.wait_for(batcher.embed(model, one), 60)

    async def burst():
        await asyncio.wait_for(asyncio.gather(*(batcher.embed(model, one)
                                                for _ in range(32))), 60)

    try:
        first = asyncio.run(lone())
        asyncio.run(burst())
        time.sleep(2.5 * PEAK_WINDOW_S)  # the burst is no longer recent load
        after_burst = asyncio.run(lone())
    finally:
        batcher.stop()
    assert (first == 4).all() and (after_burst == 4).all()
    assert sizes[0] == 1 and sizes[-1] == 1 and sum(sizes) == 34


class _FrozenClock:
    """The batcher's view of time, held still: the load it saw stays "recent" however slow
    the machine, and a batch's deadline never passes on its own (its wait still ends when
    the queue stays empty for max_wait_s of real time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name: str):
        return getattr(time, name)


def test_a_batch_waits_for_requests_that_are_on_their_way(monkeypatch):
    """After a load of 8 requests at once, a lone request waits for the 7 that follow it
    (they come later, as closed-loop clients' next requests do) and runs with them as one
    batch, instead of running alone."""
    import service.batcher

    monkeypatch.setattr(service.batcher, "time", _FrozenClock())
    model, sizes = RowSums(), []
    batcher = EmbedBatcher(max_batch=8, max_wait_s=60, on_batch=sizes.append, workers=1)
    batcher.start()

    def image(i: int) -> torch.Tensor:
        return torch.full((1, 1, 2, 2), i, dtype=torch.uint8)

    async def rounds() -> list[np.ndarray]:
        await asyncio.gather(*(batcher.embed(model, image(i)) for i in range(8)))
        del sizes[:]
        lone = asyncio.ensure_future(batcher.embed(model, image(100)))
        # The others are on their way: sent once the thread has taken the lone request off
        # the queue (and waits for more), or has answered it alone (which fails below).
        deadline = time.perf_counter() + 60
        while not (lone.done() or (batcher.pending_images == 1 and batcher._queue.empty())):
            assert time.perf_counter() < deadline, "the lone request was never taken"
            await asyncio.sleep(0.01)
        later = await asyncio.wait_for(asyncio.gather(
            *(batcher.embed(model, image(101 + i)) for i in range(7))), 60)
        return [await lone, *later]

    try:
        answers = asyncio.run(rounds())
    finally:
        batcher.stop()
    assert [int(a[0, 0]) for a in answers] == [4 * (100 + i) for i in range(8)]
    assert sizes == [8], sizes


class Gated(RowSums):
    """A forward pass that holds until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.gate = threading.Event()

    def embed_uint8(self, images: torch.Tensor) -> np.ndarray:
        self.started.set()
        assert self.gate.wait(60), "the gate was never opened"
        return super().embed_uint8(images)


def test_a_batch_never_waits_for_requests_inside_another_forward_pass(monkeypatch):
    """After a load of 8 images, one request of 7 images is being embedded by one thread when
    a lone request comes: the other 7 of the recent load cannot come back before that pass
    ends, so the lone request runs at once on the other thread instead of waiting for its
    share (4) until max_wait_s (a minute here)."""
    import service.batcher

    monkeypatch.setattr(service.batcher, "time", _FrozenClock())
    quick, gated = RowSums(), Gated()
    batcher = EmbedBatcher(max_batch=64, max_wait_s=60, workers=2)
    batcher.start()

    def images(n: int, value: int = 1) -> torch.Tensor:
        return torch.full((n, 1, 2, 2), value, dtype=torch.uint8)

    async def scenario() -> tuple[np.ndarray, np.ndarray, float]:
        # Eight clients' worth of load (the most seen at once stays "recent": the clock is
        # frozen); then one thread takes a request of 7 images and holds it in its forward.
        await asyncio.gather(*(batcher.embed(quick, images(1)) for _ in range(8)))
        held = asyncio.ensure_future(batcher.embed(gated, images(7, 2)))
        assert await asyncio.to_thread(gated.started.wait, 60)
        t0 = time.perf_counter()
        lone = await asyncio.wait_for(batcher.embed(quick, images(1, 3)), 50)
        took = time.perf_counter() - t0
        gated.gate.set()
        return lone, await asyncio.wait_for(held, 60), took

    try:
        lone, held, took = asyncio.run(scenario())
    finally:
        gated.gate.set()
        batcher.stop()
    assert (lone == 12).all() and (held == 8).all() and held.shape == (7, 1)
    # Well inside the minute it would wait otherwise (a bound, not a speed claim).
    assert took < 30, f"the lone request waited {took:.1f} s"


class Priorities(RowSums):
    """Records the OS scheduling priority of the thread that runs each forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.nice: set[int] = set()

    def embed_uint8(self, images: torch.Tensor) -> np.ndarray:
        self.nice.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return super().embed_uint8(images)


def test_the_bulk_lane_runs_at_a_lower_priority_and_leaves_the_rest_of_the_process_alone():
    """Adds to the collection run on threads that queries preempt; the query lane and the
    calling thread keep their priority."""
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    bulk_model, query_model = Priorities(), Priorities()
    bulk = EmbedBatcher(max_batch=8, max_wait_s=0.0, workers=2, nice=before + 5, name="bulk")
    queries = EmbedBatcher(max_batch=8, max_wait_s=0.0, workers=2)
    bulk.start()
    queries.start()

    async def run() -> None:
        images = torch.ones(4, 3, 2, 2, dtype=torch.uint8)
        for _ in range(4):
            await asyncio.gather(bulk.embed(bulk_model, images), queries.embed(query_model,
                                                                               images))

    try:
        asyncio.run(run())
    finally:
        bulk.stop()
        queries.stop()
    assert bulk_model.nice == {before + 5}
    assert query_model.nice == {before}
    assert all(name.startswith("bulk-") for name in bulk_model.threads)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


class _GatedRowSums(RowSums):
    """RowSums that computes only once `go` is set, so a test can fill one batch first."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()

    def embed_uint8(self, images: torch.Tensor) -> np.ndarray:
        assert self.go.wait(60)
        if (images == 255).any():
            raise ValueError("a pixel of 255 fails the batch")
        return super().embed_uint8(images)


def test_a_batch_answers_its_requests_with_one_wake_up_and_a_gone_request_harms_none():
    """One batch of 8 requests wakes the event loop once (not once per request); a request
    cancelled while its batch computes leaves the others their rows; a failing batch hands
    every request its error."""
    model, sizes = _GatedRowSums(), []
    # A batch waits (at most a minute) for the 8 requests: they arrive together, so it fills.
    batcher = EmbedBatcher(max_batch=8, max_wait_s=60.0, on_batch=sizes.append, workers=1)
    batcher.start()

    async def one_batch(fill: int) -> tuple[list, int]:
        loop = asyncio.get_running_loop()
        wakeups = 0
        plain = loop.call_soon_threadsafe

        def counted(*args, **kwargs):
            nonlocal wakeups
            wakeups += 1
            return plain(*args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        tasks = [asyncio.ensure_future(batcher.embed(
            model, torch.full((1, 1, 2, 2), fill if i else 1, dtype=torch.uint8)))
            for i in range(8)]
        await asyncio.sleep(0.2)  # all 8 queued, and taken as one batch
        tasks[3].cancel()
        model.go.set()
        answers = await asyncio.gather(*tasks, return_exceptions=True)
        model.go.clear()
        return answers, wakeups

    try:
        answers, wakeups = asyncio.run(one_batch(2))
        failed, _ = asyncio.run(one_batch(255))
    finally:
        batcher.stop()
    assert sizes == [8]  # the failing batch computed nothing
    assert wakeups == 1
    assert isinstance(answers[3], asyncio.CancelledError)
    assert [float(a[0, 0]) for i, a in enumerate(answers) if i != 3] == [4.0] + [8.0] * 6
    assert all(isinstance(a, ValueError) for i, a in enumerate(failed) if i != 3)

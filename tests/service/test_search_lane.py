"""Searches wait for a slot in the order they came, and at most `slots` run at once."""

from __future__ import annotations

import asyncio
import threading
import time

from service.search_lane import SearchLane


def test_at_most_its_slots_run_at_once_first_come_first_served():
    lane = SearchLane(2)
    lock = threading.Lock()
    running, peak, started = 0, 0, []

    def search(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            started.append(i)
        time.sleep(0.02)
        with lock:
            running -= 1
        return i * i

    async def main() -> list[int]:
        tasks = []
        for i in range(12):
            tasks.append(asyncio.create_task(lane.run(search, i)))
            await asyncio.sleep(0)  # each asks in turn
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == [i * i for i in range(12)]
    assert peak == 2
    # In arrival order, up to the two slots' own race to start.
    assert all(abs(pos - i) <= 1 for pos, i in enumerate(started)), started


def test_a_lane_has_two_slots_per_core_by_default():
    from trainer.device import cpu_count

    assert SearchLane().slots == 2 * cpu_count()

"""The CPU threads of a run's torch operations: by default the ones torch starts with (one per
core, shared out between the processes of a distributed run), or fewer, set per job
(`cpu_threads`). On two cores busy with other work, two OpenMP threads wait on each other at
every barrier: a small-CNN training step ran 3.7 times a second on two threads beside one busy
process and 5.5 on one (9.8 on two when the machine was idle; docs/benchmarks.md)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from trainer.device import cpu_count


@contextlib.contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to `count` for the block (0: left as they are; never more
    than the cores this process may run on), and put back after it: a worker process runs one
    job after another."""
    if count <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(min(count, cpu_count()))
    try:
        yield
    finally:
        torch.set_num_threads(before)

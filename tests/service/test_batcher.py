"""The embedding batcher on its own: batches fill up, every request gets its own rows, and
several inference threads stop cleanly."""

import asyncio
import os
import threading

import numpy as np
import torch

from service.batcher import EmbedBatcher


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
    # Inference threads split the cores between them; the rest of the process keeps its own.
    assert torch.get_num_threads() == main_threads
    assert model.torch_threads == {max(1, len(os.sched_getaffinity(0)) // 2)}

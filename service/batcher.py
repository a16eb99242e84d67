"""Micro-batching of embedding work.

Requests put their decoded images on a bounded queue and await a future. One inference thread
takes the first waiting request, collects more until `max_batch` images or `max_wait_s` has
passed, runs one forward pass per model version in the batch, and hands each request its rows.
Under load the model runs full batches (its efficient regime) instead of many batches of one;
the event loop never runs model code.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from trainer.encoder_file import EmbeddingModel

log = logging.getLogger(__name__)


@dataclass
class _Work:
    model: EmbeddingModel
    images: torch.Tensor  # B x 3 x S x S uint8
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class Overloaded(Exception):
    pass


class EmbedBatcher:
    def __init__(self, max_batch: int = 64, max_wait_s: float = 0.002, max_queue: int = 1024,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch or (lambda n: None)
        self._queue: queue.Queue[_Work | None] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._carry: _Work | None = None

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="embed-batcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=10)

    async def embed(self, model: EmbeddingModel, images: torch.Tensor) -> np.ndarray:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        try:
            self._queue.put_nowait(_Work(model, images, future, loop))
        except queue.Full:
            raise Overloaded("too many embedding requests are waiting") from None
        return await future

    # --- inference thread -------------------------------------------------------------------
    def _next_batch(self) -> list[_Work] | None:
        first = self._carry or self._queue.get()
        self._carry = None
        if first is None:
            return None
        batch, count = [first], first.images.shape[0]
        deadline = time.monotonic() + self.max_wait_s
        while count < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else (
                    self._queue.get_nowait())
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)
                break
            if count + item.images.shape[0] > self.max_batch:
                self._carry = item  # starts the next batch
                break
            batch.append(item)
            count += item.images.shape[0]
        return batch

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            # One forward pass per model version: a batch never mixes versions.
            by_model: dict[int, list[_Work]] = {}
            for work in batch:
                by_model.setdefault(id(work.model), []).append(work)
            for works in by_model.values():
                self._forward(works)

    def _forward(self, works: list[_Work]) -> None:
        try:
            images = torch.cat([w.images for w in works]) if len(works) > 1 else works[0].images
            vectors = works[0].model.embed_uint8(images)
            self.on_batch(images.shape[0])
        except Exception as exc:  # answered per request, never kills the thread
            log.exception("embedding batch failed")
            for w in works:
                w.loop.call_soon_threadsafe(_set_exception, w.future, exc)
            return
        start = 0
        for w in works:
            n = w.images.shape[0]
            w.loop.call_soon_threadsafe(_set_result, w.future, vectors[start:start + n])
            start += n


def _set_result(future: asyncio.Future, value: np.ndarray) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)

"""Query images: header first, then pixels.

Every image's header is read before anything is decoded: its format must be one the README
lists and the pixels it decodes to at most MAX_QUERY_PIXELS (a JPEG decodes at down to 1/8 of
its size), so a small file that declares a huge image (a decompression bomb) is refused before
it allocates. Where the work happens follows from sizes:
a request of small files has its headers read inline, and is decoded inline when it holds few
pixels (a hop to the thread pool costs more than decoding a thumbnail); anything bigger runs in
the thread pool, at most DECODE_CONCURRENCY decodes at once per process. Waiting for a slot
holds no thread.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import torch
from PIL import Image
from starlette.concurrency import run_in_threadpool

from trainer.images import (
    ACCEPTED,
    NAMED_FORMATS,
    ImageTooLarge,
    InvalidImage,
    open_image,
    square,
)

# The formats the README lists for queries (Pillow names): those of datasets but PPM.
QUERY_FORMATS = tuple(NAMED_FORMATS)
# A request whose files add up to at most this many bytes has its headers read inline...
INLINE_BYTES = 16 * 1024
# ...and is decoded inline when its images add up to at most this many pixels (64 CIFAR-size
# images, or one 256x256).
INLINE_PIXELS = 64 * 32 * 32


class QueryDecoder:
    def __init__(self, max_pixels: int, concurrency: int = 0) -> None:
        self.max_pixels = max_pixels
        self.concurrency = concurrency or max(1, len(os.sched_getaffinity(0)))
        self.running = 0
        self.peak = 0  # most decodes in the thread pool at once since start
        self._slots: asyncio.Semaphore | None = None

    def start(self) -> None:
        """Bind the decode slots to the running event loop (called at app start)."""
        self._slots = asyncio.Semaphore(self.concurrency)

    async def decode(self, blobs: list[bytes], size: int) -> torch.Tensor:
        """Encoded images -> N x 3 x size x size uint8, as training preprocessed them."""
        if sum(len(b) for b in blobs) <= INLINE_BYTES:
            images = self._open_all(blobs, size)
            if sum(im.width * im.height for im in images) <= INLINE_PIXELS:
                return self._finish(images, size)
            return await self._in_thread(lambda: self._finish(images, size))
        return await self._in_thread(lambda: self._finish(self._open_all(blobs, size), size))

    async def _in_thread(self, work: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self._slots is None:
            self.start()
        assert self._slots is not None
        async with self._slots:
            self.running += 1
            self.peak = max(self.peak, self.running)
            try:
                return await run_in_threadpool(work)
            finally:
                self.running -= 1

    def _open_all(self, blobs: list[bytes], size: int) -> list[Image.Image]:
        images = []
        for i, blob in enumerate(blobs):
            try:
                images.append(open_image(blob, formats=QUERY_FORMATS,
                                         max_pixels=self.max_pixels, decode_size=size))
            except ImageTooLarge as exc:
                raise InvalidImage(
                    f"image {i} is {exc.width}x{exc.height} pixels "
                    f"({exc.width * exc.height / 1e6:.1f} MP); the limit is MAX_QUERY_PIXELS = "
                    f"{self.max_pixels:,} pixels decoded (a JPEG decodes at down to 1/8 of "
                    "its size)") from None
            except InvalidImage as exc:
                raise InvalidImage(f"image {i}: {exc} (accepted: {ACCEPTED})") from None
        return images

    @staticmethod
    def _finish(images: list[Image.Image], size: int) -> torch.Tensor:
        out = []
        for i, image in enumerate(images):
            try:
                out.append(torch.from_numpy(square(image, size)).permute(2, 0, 1))
            except InvalidImage as exc:
                raise InvalidImage(f"image {i}: {exc}") from None
        return torch.stack(out) if len(out) > 1 else out[0].unsqueeze(0)

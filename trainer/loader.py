"""Image batches for training and embedding.

One decoding pass over the dataset happens before training: it finds unreadable files (so a
corrupt image is reported up front and never stops an epoch), measures the channel mean and
std, and, when the decoded images fit in memory, keeps them (decode once). Otherwise batches
are decoded on the fly by DataLoader worker processes. Either way a batch is a uint8
B x 3 x S x S tensor; augmentation happens afterwards on the training device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from trainer import unit_vectors
from trainer.collection import Collection
from trainer.device import cpu_count
from trainer.errors import DatasetError, EncoderOutputError
from trainer.images import InvalidImage

log = logging.getLogger(__name__)


class _Decoded(Dataset):
    """Item i -> (i, uint8 3xSxS tensor, error message or "")."""

    def __init__(self, collection: Collection, size: int) -> None:
        self.collection = collection
        self.size = size

    def __len__(self) -> int:
        return len(self.collection)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        try:
            array = self.collection.load(i, self.size)
            return i, torch.from_numpy(array).permute(2, 0, 1).contiguous(), ""
        except InvalidImage as exc:
            return i, torch.zeros(3, self.size, self.size, dtype=torch.uint8), str(exc)


Row = tuple[int, torch.Tensor, str]


def _collate(rows: list[Row]) -> tuple[np.ndarray, torch.Tensor, list[str]]:
    return (np.asarray([r[0] for r in rows], dtype=np.int64), torch.stack([r[1] for r in rows]),
            [r[2] for r in rows])


def resolve_workers(num_workers: int) -> int:
    return min(8, cpu_count()) if num_workers < 0 else num_workers


@dataclass
class Prepared:
    """A dataset after its decoding pass."""

    collection: Collection  # unreadable items removed
    mean: torch.Tensor  # 3 channel means of the training images, in [0, 1]
    std: torch.Tensor
    images: torch.Tensor | None  # N x 3 x S x S uint8 when cached


def prepare(collection: Collection, size: int, *, cache: str = "auto", cache_max_gb: float = 4.0,
            on_corrupt: str = "skip", num_workers: int = -1,
            progress: Callable[[int, int], None] | None = None) -> Prepared:
    """Decode every image once: report unreadable ones, measure mean/std, maybe keep them."""
    n = len(collection)
    nbytes = n * 3 * size * size
    keep = cache == "always" or (cache == "auto" and nbytes <= cache_max_gb * 1024**3)
    images = torch.empty(n, 3, size, size, dtype=torch.uint8) if keep else None
    ok = np.ones(n, dtype=bool)
    errors: list[tuple[str, str]] = []
    sums = torch.zeros(3, dtype=torch.float64)
    sq_sums = torch.zeros(3, dtype=torch.float64)
    pixels = 0
    train = torch.from_numpy(~collection.is_eval)
    loader = DataLoader(_Decoded(collection, size), batch_size=256, shuffle=False,
                        num_workers=resolve_workers(num_workers), collate_fn=_collate)
    done = 0
    for idx, batch, messages in loader:
        for i, message in zip(idx, messages, strict=True):
            if message:
                ok[i] = False
                errors.append((collection.ids[i], message))
        if images is not None:
            images[torch.from_numpy(idx)] = batch
        use = train[torch.from_numpy(idx)] & torch.from_numpy(ok[idx])
        x = batch[use].double().div_(255.0)
        sums += x.sum(dim=(0, 2, 3))
        sq_sums += x.pow(2).sum(dim=(0, 2, 3))
        pixels += x.shape[0] * size * size
        done += len(idx)
        if progress:
            progress(done, n)
    for item_id, message in errors:
        log.warning("unreadable image %s: %s", item_id, message)
    if errors and on_corrupt == "fail":
        listed = "; ".join(f"{i}: {m}" for i, m in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise DatasetError(f"{len(errors)} unreadable images: {listed}{more}")
    if errors:
        keep_rows = np.flatnonzero(ok)
        collection = collection.subset(keep_rows, errors)
        if images is not None:
            images = images[torch.from_numpy(keep_rows)]
    collection.check_trainable()
    mean = (sums / max(pixels, 1)).float()
    std = (sq_sums / max(pixels, 1) - (sums / max(pixels, 1)) ** 2).clamp(min=1e-8).sqrt().float()
    std = std.clamp(min=1e-3)  # a constant channel (blank images) must not divide by zero
    return Prepared(collection=collection, mean=mean, std=std, images=images)


class BatchReader:
    """uint8 batches for lists of dataset rows, from the cache or decoded in workers."""

    def __init__(self, prepared: Prepared, size: int, num_workers: int = -1,
                 pin_memory: bool = False) -> None:
        self.prepared = prepared
        self.size = size
        self.num_workers = resolve_workers(num_workers)
        self.pin_memory = pin_memory

    def __call__(self, batches: Sequence[np.ndarray]) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        images = self.prepared.images
        if images is not None:
            for rows in batches:
                batch = images.index_select(0, torch.from_numpy(rows))
                yield rows, (batch.pin_memory() if self.pin_memory else batch)
            return
        loader = DataLoader(
            _Decoded(self.prepared.collection, self.size),
            batch_sampler=[row.tolist() for row in batches],
            num_workers=self.num_workers, collate_fn=_collate, pin_memory=self.pin_memory,
            prefetch_factor=4 if self.num_workers else None,
        )
        for rows, batch, _ in loader:
            yield rows, batch


def split_batches(order: np.ndarray, batch_size: int, min_last: int = 2) -> list[np.ndarray]:
    """Consecutive batches of `order`; a last batch shorter than `min_last` joins the previous
    one, since batch norm cannot train on a single image (with several processes, each needs
    two of every batch: min_last = 2 x processes)."""
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if len(chunks) > 1 and len(chunks[-1]) < min_last:
        # Popped in a statement of its own: in `chunks[-2] = f(chunks.pop())` the target is
        # found after the pop, one slot too early, and a whole batch is lost.
        last = chunks.pop()
        chunks[-1] = np.concatenate([chunks[-1], last])
    return chunks


def embed_all(reader: BatchReader, n: int, dim: int,
              forward: Callable[[torch.Tensor], np.ndarray], batch_size: int = 256) -> np.ndarray:
    """Embeddings of rows 0..n-1 in order; `forward` maps a uint8 batch to B x dim unit
    vectors. Raises EncoderOutputError when one is not (trainer/unit_vectors.py)."""
    out = np.empty((n, dim), dtype=np.float32)
    for rows, images in reader(split_batches(np.arange(n), batch_size)):
        vectors = forward(images)
        bad = unit_vectors.off_unit_rows(vectors)
        if len(bad):
            raise EncoderOutputError(
                "the encoder's output is not usable: "
                + unit_vectors.describe(vectors, bad, [f"row {r}" for r in rows])
                + "; nothing is written from it")
        out[rows] = vectors
    return out

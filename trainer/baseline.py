"""The raw-pixel baseline: the same weighted kNN as the model's evaluation, on the images
themselves (downscaled, standardised per channel, L2-normalised), over the same split.

Every run reports it beside its own kNN accuracy, so a user sees what the learned embedding
adds over doing nothing. The protocol (labelled test split, or leave-one-out over labelled
training items) is the one `knn_evaluation` picks for the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainer.collection import Collection
from trainer.evaluation import headline, knn_evaluation
from trainer.images import InvalidImage
from trainer.loader import Prepared

SIDE = 16  # 16x16x3 = 768 numbers per image: small enough for 200k items in ~600 MB
MAX_KEYS = 200_000  # labelled training items that vote (a random sample above this)
MAX_QUERIES = 20_000  # labelled evaluation items that ask (a random sample above this)


def pixel_vectors(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                  side: int = SIDE, chunk: int = 4096) -> np.ndarray:
    """uint8 N x 3 x S x S -> N x (3*side*side) float32 unit vectors of standardised pixels."""
    out = np.empty((len(images), 3 * side * side), dtype=np.float32)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].float().div_(255.0)
        if x.shape[-1] != side:
            x = F.interpolate(x, size=(side, side), mode="area")
        x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
        out[start:start + chunk] = F.normalize(x.flatten(1), dim=1).numpy()
    return out


def _sample(rows: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return rows if len(rows) <= limit else np.sort(rng.choice(rows, limit, replace=False))


def measure(prepared: Prepared, k: int, sigma: float, side: int = SIDE,
            seed: int = 0) -> dict[str, Any] | None:
    """`pixel_knn_top1`, `pixel_knn_top5` (and protocol, queries, side) or None when the
    dataset has no labels to measure against."""
    coll = prepared.collection
    labels = coll.labels
    labelled = labels >= 0
    if not labelled.any() or len(coll.classes) < 2:
        return None
    rng = np.random.default_rng(seed)
    keys = _sample(np.flatnonzero(labelled & ~coll.is_eval), MAX_KEYS, rng)
    queries = _sample(np.flatnonzero(labelled & coll.is_eval), MAX_QUERIES, rng)
    rows = np.concatenate([keys, queries])
    images = images_of(prepared, rows, side)
    vectors = pixel_vectors(images, prepared.mean, prepared.std, side)
    is_eval = np.zeros(len(rows), dtype=bool)
    is_eval[len(keys):] = True
    knn = knn_evaluation(vectors, labels[rows], is_eval, len(coll.classes), k, sigma)
    top1, top5 = headline(knn)
    if knn is None or top1 is None:
        return None
    return {"pixel_knn_top1": top1, "pixel_knn_top5": top5,
            "pixel_knn_protocol": knn["knn_protocol"], "pixel_knn_queries": knn["knn_queries"],
            "pixel_knn_side": side}


def images_of(prepared: Prepared, rows: np.ndarray, side: int) -> torch.Tensor:
    """The rows' decoded images: from the decode cache, or decoded again at `side` when the
    dataset was too large to cache."""
    if prepared.images is not None:
        return prepared.images.index_select(0, torch.from_numpy(rows))
    return decode_rows(prepared.collection, rows, side)


def decode_rows(collection: Collection, rows: Sequence[int] | np.ndarray, side: int,
                keep: np.ndarray | None = None) -> torch.Tensor:
    """uint8 N x 3 x side x side of the collection's `rows`. With `keep`, an unreadable image
    clears its place there (its pixels stay zero); without, its error is raised."""
    out = torch.zeros(len(rows), 3, side, side, dtype=torch.uint8)
    for i, row in enumerate(rows):
        try:
            out[i] = torch.from_numpy(collection.load(int(row), side)).permute(2, 0, 1)
        except (InvalidImage, OSError):
            if keep is None:
                raise
            keep[i] = False
    return out

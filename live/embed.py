"""Embedding image files with an encoder, decoded and preprocessed as in training, a chunk at a
time (so only one chunk of decoded images is held at once). Used when a job publishes (added
images embedded by the new encoder) and when a served version re-embeds items another model
embedded."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainer.images import InvalidImage

if TYPE_CHECKING:  # torch is imported only where images are embedded
    from trainer.encoder_file import Embedder

CHUNK = 256  # images decoded and embedded per forward pass


def embed_files(model: Embedder, paths: Sequence[Path],
                on_unusable: Callable[[int, Exception], None] | None = None,
                ) -> tuple[np.ndarray, list[int]]:
    """Vectors of the image files at `paths` (N x D float32 unit vectors) and the positions in
    `paths` they belong to. A file that cannot be read or decoded raises, or, given
    `on_unusable(position, error)`, is reported there and left out."""
    import torch

    out, used = [], []
    for start in range(0, len(paths), CHUNK):
        images = []
        for pos in range(start, min(start + CHUNK, len(paths))):
            try:
                images.append(model.decode(paths[pos].read_bytes()))
            except (OSError, InvalidImage) as exc:
                if on_unusable is None:
                    raise
                on_unusable(pos, exc)
                continue
            used.append(pos)
        if images:
            out.append(model.embed_uint8(torch.stack(images)))
    vectors = np.concatenate(out) if out else np.zeros((0, model.meta.dim), np.float32)
    return vectors, used


def embed_files_with(encoder: Path, device: str = "auto",
                     precision: str = "auto") -> Callable[[list[Path]], np.ndarray]:
    """Embed image files with an encoder file; an unreadable file raises."""
    from trainer.encoder_file import EmbeddingModel

    model = EmbeddingModel.load(encoder, device, precision, serving=True)
    return lambda paths: embed_files(model, paths)[0]

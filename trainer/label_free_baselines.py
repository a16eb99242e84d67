"""The label-free score of a model beside the same score of raw pixels and of the untrained
network (the model's backbone at its seed's initialisation), on the same items and the same
augmented views: a score means something only next to what doing nothing scores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.baseline import images_of, pixel_vectors
from trainer.encoder_file import EmbeddingModel
from trainer.label_free import (
    DEFAULT_AUGMENTATION,
    MAX_SAMPLE,
    label_free_score,
    sample_rows,
    untrained_model,
    view_embedder,
)
from trainer.loader import Prepared

Forward = Callable[[torch.Tensor], np.ndarray]
LABEL_FREE_KEYS = ("label_free", "pixel_label_free", "untrained_label_free", "label_free_items")


def _embed(forward: Forward, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    return np.concatenate([forward(images[i:i + batch_size])
                           for i in range(0, len(images), batch_size)])


def score_with_baselines(prepared: Prepared, model: EmbeddingModel,
                         embeddings: np.ndarray | None = None, *, init_seed: int = 0,
                         seed: int = 0, sample: int = MAX_SAMPLE) -> dict[str, Any]:
    """`label_free`, `pixel_label_free`, `untrained_label_free` (floats, higher is better)
    and their parts, on the same sample of at most `sample` items of `prepared`.

    `embeddings`: the model's embeddings of every item, when the caller has them (then the
    model embeds only the views); otherwise the sample is embedded here too.
    """
    rows = sample_rows(len(prepared.collection), sample, seed)
    size = model.meta.image_size
    images = images_of(prepared, rows, size)

    def of_sample(picked: np.ndarray) -> torch.Tensor:
        return images[torch.from_numpy(picked)]

    def pixels(batch: torch.Tensor) -> np.ndarray:
        return pixel_vectors(batch, prepared.mean, prepared.std)

    untrained = untrained_model(model.meta.backbone, model.meta.dim, size,
                                torch.tensor(model.meta.mean), torch.tensor(model.meta.std),
                                seed=init_seed, device=str(model.runtime.device),
                                precision="bf16" if model.runtime.bf16 else "fp32")
    clean = {
        "model": embeddings[rows] if embeddings is not None else _embed(model.embed_uint8,
                                                                         images),
        "pixels": _embed(pixels, images),
        "untrained": _embed(untrained.embed_uint8, images),
    }
    forwards: dict[str, Forward] = {"model": model.embed_uint8, "pixels": pixels,
                                    "untrained": untrained.embed_uint8}
    scores = {name: label_free_score(clean[name], view_embedder(of_sample, forwards[name],
                                                                seed=seed))
              for name in clean}
    return {
        "label_free": scores["model"].score,
        "pixel_label_free": scores["pixels"].score,
        "untrained_label_free": scores["untrained"].score,
        "label_free_parts": {name: s.parts for name, s in scores.items()},
        "label_free_items": len(rows),
        "label_free_augmentation": DEFAULT_AUGMENTATION,
    }


def run_figures(encoder: Path, prepared: Prepared, embeddings: np.ndarray, init_seed: int,
                device: str = "auto") -> dict[str, Any]:
    """The label-free figures of a finished run's encoder file (what its metrics.json keeps:
    the three scores and the sample's size; the parts stay with `evaluate`)."""
    model = EmbeddingModel.load(encoder, device=device)
    figures = score_with_baselines(prepared, model, embeddings, init_seed=init_seed)
    return {key: figures[key] for key in LABEL_FREE_KEYS}

"""The label-free score of a model beside the same score of raw pixels and of the untrained
network (the model's backbone at its seed's initialisation), on the same items and the same
augmented views: a score means something only next to what doing nothing scores. A run that
started from pretrained weights (init_from=imagenet) is also set beside the network it started
from: those weights, with the head of its seed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.baseline import images_of, pixel_vectors
from trainer.encoder_file import EmbeddingModel, EncoderMeta
from trainer.label_free import (
    AUGMENTATIONS,
    DEFAULT_AUGMENTATION,
    MAX_SAMPLE,
    MEASURE,
    LabelFreeScore,
    augmented_views,
    label_free_score,
    sample_rows,
    untrained_model,
)
from trainer.loader import Prepared

Forward = Callable[[torch.Tensor], np.ndarray]
LABEL_FREE_KEYS = ("label_free", "pixel_label_free", "untrained_label_free", "label_free_items",
                   "label_free_measure")
PRETRAINED_KEY = "pretrained_label_free"
# A finished run's per-item terms of the model's and raw pixels' scores (LabelFreeScore.per_item,
# arrays `model` and `pixels`): what the gate's paired noise is measured from.
LABEL_FREE_TERMS = "label_free_terms.npz"


@dataclass(frozen=True)
class MeasuredBaselines:
    """Baselines' scores already measured on the sample `rows` with the views of `seed` (and
    their other parts if `every_part`): the same network, seed and views score the same, so a
    run measures them once."""
    rows: np.ndarray
    seed: int
    every_part: bool
    scores: dict[str, LabelFreeScore]

    def on(self, rows: np.ndarray, seed: int,
           every_part: bool) -> dict[str, LabelFreeScore] | None:
        same = (seed == self.seed and every_part == self.every_part
                and np.array_equal(rows, self.rows))
        return self.scores if same else None


def _embed(forward: Forward, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    return np.concatenate([forward(images[i:i + batch_size])
                           for i in range(0, len(images), batch_size)])


def sample_views(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One view of each image of the sample: the same for every encoder given the seed."""
    return augmented_views(images, AUGMENTATIONS[DEFAULT_AUGMENTATION], seed)


def sample_score(forward: Forward, images: torch.Tensor, views: torch.Tensor,
                 clean: np.ndarray | None = None, every_part: bool = True) -> LabelFreeScore:
    """The score of `forward` (uint8 batches -> vectors) on every item of `images` (the
    sample, uint8 N x 3 x S x S) and their `views` (sample_views). `clean`: its embeddings of
    `images`, when the caller has them (then only the views are embedded). `every_part`: the
    parts the score is not made of too (label_free_score)."""
    clean = clean if clean is not None else _embed(forward, images)
    return label_free_score(clean, lambda rows: _embed(forward, views[torch.from_numpy(rows)]),
                            sample=len(images), every_part=every_part)


def baseline_scores(images: torch.Tensor, views: torch.Tensor, prepared: Prepared,
                    meta: EncoderMeta, *, init_seed: int = 0, device: str = "auto",
                    precision: str = "auto", every_part: bool = True,
                    start_weights: Path | None = None) -> dict[str, LabelFreeScore]:
    """`pixels` and `untrained`: what raw pixels (standardised with the collection's channel
    statistics) and the untrained network of `meta` (normalised as that model is) score on
    the sample `images` and its `views`; `pretrained` too, given the `start_weights` the run
    loaded into that network."""
    def pixels(batch: torch.Tensor) -> np.ndarray:
        return pixel_vectors(batch, prepared.mean, prepared.std)

    untrained = untrained_model(meta.backbone, meta.dim, meta.image_size,
                                torch.tensor(meta.mean), torch.tensor(meta.std),
                                seed=init_seed, device=device, precision=precision)
    scores = {"pixels": sample_score(pixels, images, views, every_part=every_part),
              "untrained": sample_score(untrained.embed_uint8, images, views,
                                        every_part=every_part)}
    if start_weights is not None:
        pretrained = untrained_model(meta.backbone, meta.dim, meta.image_size,
                                     torch.tensor(meta.mean), torch.tensor(meta.std),
                                     seed=init_seed, device=device, precision=precision,
                                     weights=start_weights)
        scores["pretrained"] = sample_score(pretrained.embed_uint8, images, views,
                                            every_part=every_part)
    return scores


def score_with_baselines(prepared: Prepared, model: EmbeddingModel,
                         embeddings: np.ndarray | None = None, *, init_seed: int = 0,
                         seed: int = 0, sample: int = MAX_SAMPLE,
                         start_weights: Path | None = None, every_part: bool = True,
                         measured: MeasuredBaselines | None = None,
                         terms_to: Path | None = None) -> dict[str, Any]:
    """`label_free`, `pixel_label_free`, `untrained_label_free` (floats, higher is better)
    and their parts, on the same sample of at most `sample` items of `prepared`; with
    `start_weights` (a pretrained start's file), `pretrained_label_free` too. `every_part`:
    the parts the score is not made of too (sample_score).

    `embeddings`: the model's embeddings of every item, when the caller has them (then the
    model embeds only the views); otherwise the sample is embedded here too. `measured`: the
    baselines' scores the caller has, used when they are of this sample, views and parts.
    `terms_to`: a file to keep the model's and raw pixels' per-item terms in (LABEL_FREE_TERMS).
    """
    rows = sample_rows(len(prepared.collection), sample, seed)
    images = images_of(prepared, rows, model.meta.image_size)
    views = sample_views(images, seed)
    known = measured.on(rows, seed, every_part) if measured is not None else None
    scores = {"model": sample_score(model.embed_uint8, images, views,
                                    embeddings[rows] if embeddings is not None else None,
                                    every_part=every_part),
              **(known if known is not None else baseline_scores(
                  images, views, prepared, model.meta, init_seed=init_seed,
                  device=str(model.runtime.device),
                  precision="bf16" if model.runtime.bf16 else "fp32",
                  every_part=every_part, start_weights=start_weights))}
    model_terms, pixel_terms = scores["model"].per_item, scores["pixels"].per_item
    if terms_to is not None and model_terms is not None and pixel_terms is not None:
        np.savez(terms_to, model=model_terms, pixels=pixel_terms)
    pretrained = {PRETRAINED_KEY: scores["pretrained"].score} if start_weights else {}
    return pretrained | {
        "label_free": scores["model"].score,
        "pixel_label_free": scores["pixels"].score,
        "untrained_label_free": scores["untrained"].score,
        "label_free_parts": {name: s.parts for name, s in scores.items()},
        "label_free_items": len(rows),
        "label_free_measure": MEASURE,
        "label_free_augmentation": DEFAULT_AUGMENTATION,
    }


def run_figures(encoder: Path, prepared: Prepared, embeddings: np.ndarray, init_seed: int,
                device: str = "auto", start_weights: Path | None = None,
                precision: str = "auto",
                measured: MeasuredBaselines | None = None,
                terms_to: Path | None = None) -> dict[str, Any]:
    """The label-free figures of a finished run's encoder file (what its metrics.json keeps:
    the three scores, the pretrained start's with `start_weights`, and the sample's size; the
    parts stay with `evaluate`). `precision`: the run's, which embedded `embeddings`, so the
    views are embedded as the items were (as `evaluate` does, from the run's config).
    `measured`: the baselines the run scored while it trained, reused where the sample is the
    same (a collection no larger than the progress sample). `terms_to`: as in
    score_with_baselines."""
    model = EmbeddingModel.load(encoder, device=device, precision=precision)
    # Only the scores are kept: the other parts (an SVD and a pass over all pairs of the
    # sample, per encoder) are left to `evaluate`.
    figures = score_with_baselines(prepared, model, embeddings, init_seed=init_seed,
                                   start_weights=start_weights, every_part=False,
                                   measured=measured, terms_to=terms_to)
    return {key: figures[key] for key in (*LABEL_FREE_KEYS, PRETRAINED_KEY) if key in figures}

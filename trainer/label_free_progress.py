"""The label-free score in a run's progress: at every evaluation epoch (where the labelled kNN
figure is measured, or would be on labelled data), the encoder as it stands is scored on one
fixed sample of at most PROGRESS_SAMPLE items, with the same views every time; raw pixels' and
the untrained network's scores on that sample are measured once, when the run starts.

The sample is smaller than the finished run's (trainer.label_free.MAX_SAMPLE), so that
measuring during training stays cheap: two passes over at most 2,000 images per evaluation.
On a collection larger than that, the last epoch's figure and the run's metrics.json are
therefore measured on different samples. Only the score is measured, not the other parts
`evaluate` reports. Where the epoch's kNN evaluation has just embedded
the collection, those embeddings are reused: only the views are embedded then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.baseline import images_of
from trainer.device import Runtime
from trainer.encoder_file import EncoderMeta
from trainer.label_free import MEASURE, sample_rows
from trainer.label_free_baselines import (
    MeasuredBaselines,
    baseline_scores,
    sample_score,
    sample_views,
)
from trainer.loader import Prepared
from trainer.outputs import encoder_forward, evaluating

PROGRESS_SAMPLE = 2_000
# The sample's images and views stay in memory between evaluations up to this size each
# (2,000 images of 32 x 32 take 6 MB); larger ones are read and augmented again each time.
KEEP_BYTES = 64 * 1024**2


class ProgressScore:
    """Scores the run's encoder on the run's sample; `baselines` are the figures every epoch
    record carries (raw pixels, untrained network, the pretrained start's network when the run
    loaded `start_weights`, the sample's size)."""

    def __init__(self, prepared: Prepared, meta: EncoderMeta, rt: Runtime, init_seed: int,
                 sample: int = PROGRESS_SAMPLE, seed: int = 0,
                 start_weights: Path | None = None) -> None:
        self.prepared, self.meta, self.rt, self.seed = prepared, meta, rt, seed
        self.rows = sample_rows(len(prepared.collection), sample, seed)
        images, views = self._sample()
        base = baseline_scores(images, views, prepared, meta, init_seed=init_seed,
                               device=str(rt.device), precision="bf16" if rt.bf16 else "fp32",
                               every_part=False, start_weights=start_weights)
        self.baselines: dict[str, Any] = {
            "pixel_label_free": base["pixels"].score,
            "untrained_label_free": base["untrained"].score,
            "label_free_items": len(self.rows),
            "label_free_measure": MEASURE,
        }
        if "pretrained" in base:
            self.baselines["pretrained_label_free"] = base["pretrained"].score
        # The finished run's figures reuse them where its sample is this one.
        self.measured = MeasuredBaselines(self.rows, seed, False, base)
        self._kept = (images, views) if images.numel() <= KEEP_BYTES else None

    def _sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        images = images_of(self.prepared, np.asarray(self.rows), self.meta.image_size)
        return images, sample_views(images, self.seed)

    def __call__(self, model: torch.nn.Module, mean: torch.Tensor, std: torch.Tensor,
                 embeddings: np.ndarray | None = None) -> float:
        """The label-free score of `model` as it is now (left in training mode).
        `embeddings`: its embeddings of the whole collection, when they were just computed
        (then only the views are embedded)."""
        images, views = self._kept or self._sample()
        clean = embeddings[self.rows] if embeddings is not None else None
        with evaluating(model):
            forward = encoder_forward(model, self.rt, mean, std)
            return sample_score(forward, images, views, clean, every_part=False).score


def run_meta(backbone: str, dim: int, image_size: int, mean: torch.Tensor,
             std: torch.Tensor) -> EncoderMeta:
    """The description of a run's encoder, as its encoder file will hold it."""
    m, s = [float(v) for v in mean], [float(v) for v in std]
    return EncoderMeta(backbone=backbone, dim=dim, image_size=image_size,
                       mean=(m[0], m[1], m[2]), std=(s[0], s[1], s[2]))

"""A label-free score of an encoder on a collection, from the images alone.

One augmented view of each sampled item (at most 10,000: the one extra embedding pass) looks
for its own image among the sample's N clean embeddings. Its rank r (0 = found first) is scored
1 - log(1 + r) / log(N): 1 when always first, 0 when always last, and each halving of the rank
gains the same. Ties count against the view, so a collapsed encoder, whose embeddings are all
alike, scores 0. The same score is computed for raw pixels and for the untrained network on the
same items and the same views (trainer/label_free_baselines), so the three are comparable.

Chosen by measurement (bench/label_free.py, docs/benchmarks.md) among the parts computed here:
retrieval (top-1, mean reciprocal rank, mean log-rank, after centring), agreement of the k-NN
lists of a view and its original, effective rank (RankMe), alignment and uniformity, and
further candidates measured by the benchmarks alone (whitening, cluster stability, pseudo-label
kNN, recall within a share of the sample, mean percentile; LiDAR and the retrieval of an
image's other half, which need more views: bench/label_free_views.py). Retrieval ordered the
panels best.
Until December 6 the score was the mean reciprocal rank (MEASURE_BEFORE), which only the first
few places move: a handful of near-duplicates ranked above an item's own copy (overlapping
patches, burst photos) cost it most of its value, and pixels, which tell near-duplicates apart
best, won. The log-rank was chosen on a fourth build of the panels and checked on a fifth and a
sixth that did not choose it: over the three, it ordered the encoder pairs more than 2 kNN
points apart as kNN does in 86.6 % of cases on average against 83.6 %, and 69.1 % against
63.2 % on the worst collection (ahead on 9 of 12 collection-builds, behind on 2, both digits).
Neither reaches 90 % everywhere. Its noise (sd <= 0.0053 over view seeds and resamples) sets
GATE_MARGIN. The view is a milder fixed augmentation than training's (crop area >= 60 %, jitter
0.2, no grey): training's ordered a little better on average but with the same noise on scores
three times smaller.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.augment import BatchAugment
from trainer.backbones import Encoder
from trainer.device import resolve
from trainer.encoder_file import EmbeddingModel, EncoderMeta
from trainer.warm_start import load_initial_weights

MAX_SAMPLE = 10_000  # items whose views are embedded: the one extra pass
# What the score measures, kept beside every score: two scores compare only when it is the same.
MEASURE = "retrieval_log_rank"
MEASURE_BEFORE = "retrieval_mrr"  # what a score without a recorded measure is
# Smallest score difference worth acting on: 3 sd of the difference of two scores, the sd
# (0.0053) being the largest seen over view seeds and resamples of 1,000 to 3,200 items
# (docs/benchmarks.md); on smaller samples their own noise is larger (judge.label_free_margin).
GATE_MARGIN = 0.025
DEFAULT_K = 10  # neighbours compared between a view and its original


@dataclass(frozen=True)
class Augmentation:
    """A fixed view: RandomResizedCrop(scale=(crop_scale_min, 1)), colour jitter, grey."""

    crop_scale_min: float
    jitter: float
    grayscale_p: float


AUGMENTATIONS = {
    "train": Augmentation(0.2, 0.4, 0.2),  # the training default
    "mild": Augmentation(0.6, 0.2, 0.0),
}
DEFAULT_AUGMENTATION = "mild"


@dataclass(frozen=True)
class LabelFreeScore:
    score: float
    parts: dict[str, float] = field(default_factory=dict)
    items: int = 0
    # Each sampled item's own term of the score, in sample order: two encoders scored on the
    # same sample and views compare item by item (trainer/judge.label_free_margin).
    per_item: np.ndarray | None = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict[str, float | int]:
        return {"score": self.score, **self.parts, "items": self.items}


def sample_rows(n: int, limit: int = MAX_SAMPLE, seed: int = 0) -> np.ndarray:
    """Sorted rows of at most `limit` items, the same for every encoder given the seed."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def augmented_views(images: torch.Tensor, augmentation: Augmentation, seed: int = 0,
                    chunk: int = 1024) -> torch.Tensor:
    """uint8 N x 3 x S x S -> one augmented view of each, uint8 of the same shape, so any
    encoder (raw pixels included) embeds the views as it embeds images."""
    size = images.shape[-1]
    augment = BatchAugment(size, torch.zeros(3), torch.ones(3),
                           crop_scale_min=augmentation.crop_scale_min,
                           jitter=augmentation.jitter, grayscale_p=augmentation.grayscale_p)
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty_like(images)
    for start in range(0, len(images), chunk):
        x = augment(images[start:start + chunk], gen)
        out[start:start + chunk] = x.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return out


def untrained_model(backbone: str, dim: int, image_size: int, mean: torch.Tensor,
                    std: torch.Tensor, seed: int = 0, device: str = "auto",
                    precision: str = "auto", weights: Path | None = None) -> EmbeddingModel:
    """The network a run of this seed starts from (the training loop seeds torch, then builds
    the encoder), without touching the caller's random state. `weights`: the file a warm
    start loads into it (trainer.warm_start), e.g. the pretrained backbone of init_from."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Encoder(backbone, dim)
    if weights is not None:
        load_initial_weights(model, weights)
    m, s = [float(v) for v in mean], [float(v) for v in std]
    meta = EncoderMeta(backbone=backbone, dim=dim, image_size=image_size,
                       mean=(m[0], m[1], m[2]), std=(s[0], s[1], s[2]))
    return EmbeddingModel(model, meta, resolve(device, precision))


# --- the parts --------------------------------------------------------------------------

def _unit(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return t / t.norm(dim=1, keepdim=True).clamp(min=1e-12)


def retrieval_ranks(clean: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """Rank of item i's own clean embedding among all clean embeddings, seen from its view
    (0 = first). Ties count against the view, so identical embeddings find nothing."""
    n = len(clean)
    ranks = torch.empty(n, dtype=torch.long)
    for start in range(0, n, _step(n)):
        sims = views[start:start + _step(n)] @ clean.t()
        rows = torch.arange(start, start + len(sims))
        own = sims[torch.arange(len(sims)), rows].unsqueeze(1)
        ranks[rows] = (sims >= own).sum(1) - 1
    return ranks


def _step(n: int, budget: int = 2**24) -> int:
    return max(1, budget // max(1, n))


def neighbour_lists(queries: torch.Tensor, keys: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k key rows of each query, query i's own row i excluded."""
    n = len(keys)
    k = min(k, n - 1)
    out = torch.empty(len(queries), k, dtype=torch.long)
    for start in range(0, len(queries), _step(n)):
        sims = queries[start:start + _step(n)] @ keys.t()
        rows = torch.arange(start, start + len(sims))
        sims[torch.arange(len(sims)), rows] = -math.inf
        out[rows] = sims.topk(k, dim=1).indices
    return out


def list_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean share of row i's k entries of `a` that are also in row i of `b`."""
    if a.shape[1] == 0:
        return 0.0
    hits = (a.unsqueeze(2) == b.unsqueeze(1)).any(2).float()
    return float(hits.mean())


def effective_rank(x: torch.Tensor) -> float:
    """RankMe: exp of the entropy of the normalised singular values (1 for a collapse onto a
    line, up to min(N, D))."""
    s = torch.linalg.svdvals(x.double())
    p = s / s.sum().clamp(min=1e-30)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def uniformity(x: torch.Tensor, t: float = 2.0) -> float:
    """log E exp(-t |xi - xj|^2) over pairs i != j (Wang & Isola); lower is more spread."""
    n = len(x)
    if n < 2:
        return 0.0
    total = 0.0
    for start in range(0, n, _step(n)):
        sims = x[start:start + _step(n)] @ x.t()
        w = torch.exp(-t * (2 - 2 * sims.double()))
        rows = torch.arange(start, start + len(sims))
        w[torch.arange(len(sims)), rows] = 0.0
        total += float(w.sum())
    return math.log(max(total / (n * (n - 1)), 1e-300))


def _mrr(ranks: torch.Tensor) -> float:
    """Mean reciprocal rank of 0-based ranks."""
    return float((1.0 / (ranks.double() + 1)).mean())


def log_rank_terms(ranks: torch.Tensor, n: int) -> torch.Tensor:
    """1 - log(1 + rank) / log(n) per 0-based rank among n items: 1 for rank 0, 0 for n - 1."""
    if n < 2:
        return torch.ones(len(ranks), dtype=torch.float64)
    return 1.0 - torch.log1p(ranks.double()) / math.log(n)


def log_rank_score(ranks: torch.Tensor, n: int) -> float:
    """The mean of log_rank_terms: 1 when every rank is 0, 0 when every rank is n - 1."""
    return float(log_rank_terms(ranks, n).mean()) if len(ranks) else 1.0


def parts_of(clean: np.ndarray, views: np.ndarray, k: int = DEFAULT_K,
             ranks: torch.Tensor | None = None) -> dict[str, float]:
    """Every measured part, for embeddings of the same items (row i of each); `ranks`: their
    retrieval_ranks, when the caller has them."""
    c, v = _unit(clean), _unit(views)
    ranks = (retrieval_ranks(c, v) if ranks is None else ranks).double()
    # The same retrieval once the collection's mean is removed: a direction every embedding
    # shares (large in untrained ReLU networks) no longer hides how the items differ.
    mean = c.mean(0, keepdim=True)
    centred = retrieval_ranks(_unit((c - mean).numpy()), _unit((v - mean).numpy())).double()
    own = neighbour_lists(c, c, k)
    seen = neighbour_lists(v, c, k)
    d = c.shape[1]
    erank = effective_rank(c)
    return {
        "retrieval_top1": float((ranks == 0).double().mean()),
        "retrieval_mrr": _mrr(ranks),
        "retrieval_log_rank": log_rank_score(ranks, len(c)),
        "centred_mrr": _mrr(centred),
        "neighbour_top1_agreement": list_agreement(own[:, :1], seen[:, :1]),
        "knn_agreement": list_agreement(own, seen),
        "alignment": float((c - v).pow(2).sum(1).mean()),
        "uniformity": uniformity(c),
        "effective_rank": erank,
        "effective_rank_share": erank / min(len(c), d),
    }


def measure_of(figures: dict[str, Any]) -> str:
    """What the label-free score among `figures` (a run's metrics) measures: runs before
    MEASURE was recorded scored MEASURE_BEFORE."""
    return str(figures.get("label_free_measure") or MEASURE_BEFORE)


def with_measure(figures: dict[str, Any]) -> dict[str, Any]:
    """`figures` with `label_free_measure` spelled out where a label-free score was recorded
    without it, so that what reads them (the API's answers, the console) never guesses."""
    if figures.get("label_free") is None or figures.get("label_free_measure"):
        return figures
    return {**figures, "label_free_measure": measure_of(figures)}


def combine(parts: dict[str, float]) -> float:
    """The score from its parts: the mean log-rank score of the retrieval (MEASURE)."""
    return parts[MEASURE]


def score_parts(ranks: torch.Tensor, n: int) -> dict[str, float]:
    """Only the parts the score is made of (combine), from the sample's retrieval_ranks among
    its n items: what measuring it during training needs, without the others' cost (an SVD,
    all pairs)."""
    return {MEASURE: log_rank_score(ranks, n)}


def label_free_score(embeddings: np.ndarray,
                     embed_views: Callable[[np.ndarray], np.ndarray], *,
                     sample: int = MAX_SAMPLE, k: int = DEFAULT_K,
                     seed: int = 0, every_part: bool = True) -> LabelFreeScore:
    """Score an encoder from its `embeddings` of a collection (N x D, row i = item i) and
    `embed_views(rows)`: its embeddings of one augmented view of each of those items (the one
    extra pass, over at most `sample` rows). Higher is better. `every_part`: also measure the
    parts the score is not made of (parts_of), else only its own (score_parts)."""
    rows = sample_rows(len(embeddings), sample, seed)
    views = np.asarray(embed_views(rows), dtype=np.float32)
    if views.shape != (len(rows), embeddings.shape[1]):
        raise ValueError(f"embed_views returned {views.shape}, expected "
                         f"{(len(rows), embeddings.shape[1])}")
    clean = embeddings[rows]
    ranks = retrieval_ranks(_unit(clean), _unit(views))
    parts = (parts_of(clean, views, k, ranks) if every_part
             else score_parts(ranks, len(rows)))
    return LabelFreeScore(score=combine(parts), parts=parts, items=len(rows),
                          per_item=log_rank_terms(ranks, len(rows)).numpy())


def view_embedder(images: Callable[[np.ndarray], torch.Tensor],
                  forward: Callable[[torch.Tensor], np.ndarray],
                  augmentation: Augmentation | str = DEFAULT_AUGMENTATION, seed: int = 0,
                  batch_size: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    """embed_views for an encoder that maps uint8 batches to vectors (`forward`): `images(rows)`
    gives the items' uint8 images; the views depend only on the seed, so two encoders given
    the same seed see the same views."""
    aug = AUGMENTATIONS[augmentation] if isinstance(augmentation, str) else augmentation

    def embed_views(rows: np.ndarray) -> np.ndarray:
        views = augmented_views(images(rows), aug, seed)
        return np.concatenate([forward(views[i:i + batch_size])
                               for i in range(0, len(views), batch_size)])

    return embed_views

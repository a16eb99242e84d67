"""Judging a new model against the one it would replace, on the same items, beyond the noise.

A model is measured by the weighted kNN top-1 of its labelled evaluation split (AND_SPEC §6).
Against another model the comparison is *paired*: both embeddings answer the same queries, the
difference is the mean of the per-query differences (each +1, 0 or -1), and its noise is that
mean's standard error. Against raw pixels, whose per-query answers the run does not keep, it is
the difference of two proportions over the same number of queries, with their standard error.
The candidate wins only when its gain exceeds `Z` standard errors: a tie, or a gain the test
split is too small to show, keeps the model in place.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from trainer.evaluation import knn_protocol
from trainer.knn import knn_scores
from trainer.label_free import GATE_MARGIN

Z = 2.0  # standard errors a gain must exceed (about 97.7 % one-sided)


@dataclass(frozen=True)
class Verdict:
    """A gate's decision with the figures that made it."""

    promote: bool
    measure: str  # what was compared, e.g. "knn_top1"
    candidate: float | None  # the new model's figure
    incumbent: float | None  # the figure it had to beat
    incumbent_name: str  # "raw pixels" or the version it would replace
    margin: float  # how much more than the incumbent it needed (Z standard errors)
    items: int  # the queries both were measured on
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def correct(vectors: np.ndarray, labels: np.ndarray, is_eval: np.ndarray, n_classes: int,
            k: int, sigma: float) -> np.ndarray:
    """Per query, in row order: 1.0 where the weighted kNN predicts its label, else 0.0. The
    queries and voters are those of trainer/evaluation.knn_protocol."""
    protocol = knn_protocol(labels, is_eval)
    queries, keys = protocol.queries, protocol.keys
    own = torch.arange(len(keys)) if protocol.leave_one_out else None
    if not protocol.can_vote:
        return np.zeros(0)
    emb = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    lab = torch.from_numpy(labels.astype(np.int64))
    scores = knn_scores(emb[queries], emb[keys], lab[keys], n_classes, k, sigma, query_rows=own)
    return (scores.argmax(1) == lab[queries]).numpy().astype(np.float64)


def paired(candidate: np.ndarray, incumbent: np.ndarray, incumbent_name: str,
           measure: str = "knn_top1", z: float = Z) -> Verdict:
    """Per-query scores of two models on the same queries."""
    n = len(candidate)
    if n == 0:
        return Verdict(True, measure, None, None, incumbent_name, 0.0, 0,
                       "no labelled evaluation items in common: nothing to compare")
    _, se = paired_difference(candidate, incumbent)
    return _decide(float(candidate.mean()), float(incumbent.mean()), z * se, n,
                   incumbent_name, measure)


def paired_difference(candidate: np.ndarray, incumbent: np.ndarray) -> tuple[float, float]:
    """(mean of the per-query differences, its standard error), for scores of two models on
    the same queries (at least one)."""
    diff = candidate - incumbent
    n = len(diff)
    return float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0


def unpaired(candidate: float, incumbent: float, n: int, incumbent_name: str,
             measure: str = "knn_top1", z: float = Z) -> Verdict:
    """Two proportions measured on the same `n` queries, answers not kept."""
    if n <= 0:
        return Verdict(True, measure, candidate, incumbent, incumbent_name, 0.0, 0,
                       "no evaluation items: nothing to compare")
    se = math.sqrt((candidate * (1 - candidate) + incumbent * (1 - incumbent)) / n)
    return _decide(candidate, incumbent, z * se, n, incumbent_name, measure)


def label_free_margin(mine: np.ndarray | None, theirs: np.ndarray | None) -> float:
    """The smallest label-free score difference that counts between two encoders scored on the
    same sample and views: the score's spread measured over view seeds and resamples
    (GATE_MARGIN), or `Z` standard errors of the per-item differences (their terms, `mine` and
    `theirs`, where known) when more, as on a sample of a few hundred items or fewer."""
    if mine is None or theirs is None or len(mine) != len(theirs):
        return GATE_MARGIN
    _, se = paired_difference(np.asarray(mine, np.float64), np.asarray(theirs, np.float64))
    return max(GATE_MARGIN, Z * se)


def with_margin(candidate: float, incumbent: float, margin: float, n: int,
                incumbent_name: str, measure: str) -> Verdict:
    """A score whose noise was measured elsewhere (e.g. the label-free score's spread)."""
    return _decide(candidate, incumbent, margin, n, incumbent_name, measure)


def _decide(candidate: float, incumbent: float, margin: float, n: int, incumbent_name: str,
            measure: str) -> Verdict:
    gain = candidate - incumbent
    win = gain > margin
    if gain >= 0:
        verdict = f"a gain of {gain:.4f}, {'more' if win else 'not more'} than the margin"
    else:  # "a loss ..., not more than the margin" would read as if a small loss were fine
        verdict = f"a loss of {-gain:.4f}, where it needed a gain of more than the margin"
    reason = (f"{measure} {candidate:.4f} vs {incumbent:.4f} for {incumbent_name} on {n} items: "
              f"{verdict} {margin:.4f}")
    return Verdict(win, measure, candidate, incumbent, incumbent_name, margin, n, reason)

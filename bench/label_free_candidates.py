"""Candidate label-free scores beyond the parts trainer/label_free.py computes, measured by
bench/label_free.py on the same clean and view embeddings, and the labelled reference's own
noise (how often even a perfect score could agree with a kNN top-1 measured on a small test
split).

Every candidate uses what the service has: the clean embeddings of the sample and one
augmented view of each (the one extra pass).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from trainer.knn import knn_scores
from trainer.label_free import (
    effective_rank,
    list_agreement,
    log_rank_score,
    neighbour_lists,
    retrieval_ranks,
)

CLUSTERS = 10  # k-means clusters of the pseudo-label candidates
KNN_K, KNN_SIGMA = 200, 0.1  # the labelled kNN's settings, reused by the pseudo-label kNN
WHITEN_RIDGE = 1e-2  # share of the top eigenvalue added before whitening (pixels: D > N)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)


def _mrr(clean: torch.Tensor, views: torch.Tensor) -> float:
    return float((1.0 / (retrieval_ranks(clean, views).double() + 1)).mean())


def whitened(clean: torch.Tensor, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both PCA-whitened with the clean sample's mean and covariance (ridge-regularised)."""
    c, v = clean.double(), views.double()
    mean = c.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(c - mean, full_matrices=False)
    ev = s ** 2 / len(c)
    keep = ev > ev[0] * 1e-9
    w = vh[keep].t() / torch.sqrt(ev[keep] + WHITEN_RIDGE * ev[0])
    return _unit(((c - mean) @ w).float()), _unit(((v - mean) @ w).float())


def kmeans(x: torch.Tensor, k: int, seed: int = 0, iters: int = 30) -> torch.Tensor:
    """Spherical k-means (k-means++ start) on unit rows: the k unit centroids."""
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    picks = [int(torch.randint(n, (1,), generator=gen))]
    dist = (1 - x @ x[picks[0]]).clamp(min=0)
    for _ in range(1, min(k, n)):
        total = float(dist.sum())
        p = dist / total if total > 0 else torch.full((n,), 1.0 / n)
        picks.append(int(torch.multinomial(p, 1, generator=gen)))
        dist = torch.minimum(dist, (1 - x @ x[picks[-1]]).clamp(min=0))
    centroids = x[picks].clone()
    for _ in range(iters):
        assign = (x @ centroids.t()).argmax(1)
        summed = torch.zeros_like(centroids).index_add_(0, assign, x)
        empty = summed.norm(dim=1) < 1e-12
        summed = _unit(summed)
        summed[empty] = centroids[empty]
        centroids = summed
    return centroids


def cluster_stability(clean: torch.Tensor, views: torch.Tensor, k: int = CLUSTERS) -> float:
    """Share of views assigned to the k-means cluster of their original."""
    centroids = kmeans(clean, k)
    return float(((clean @ centroids.t()).argmax(1) == (views @ centroids.t()).argmax(1))
                 .float().mean())


def pseudo_label_knn(clean: torch.Tensor, views: torch.Tensor, k: int = CLUSTERS) -> float:
    """kNN self-consistency: k-means pseudo-labels of the clean items; each view, a query
    against the other items (weighted kNN as labelled), predicts its item's pseudo-label."""
    centroids = kmeans(clean, k)
    labels = (clean @ centroids.t()).argmax(1)
    n = len(clean)
    neighbours = min(KNN_K, n - 1)
    sims = views @ clean.t()
    sims.fill_diagonal_(-math.inf)
    top, rows = sims.topk(neighbours, dim=1)
    votes = torch.zeros(n, k).scatter_add_(1, labels[rows], torch.exp(top / KNN_SIGMA))
    return float((votes.argmax(1) == labels).float().mean())


def local_mrr(clean: torch.Tensor, views: torch.Tensor, k: int = 10) -> float:
    """Retrieval among the original and its k nearest clean neighbours only."""
    candidates = torch.cat([torch.arange(len(clean)).unsqueeze(1),
                            neighbour_lists(clean, clean, k)], 1)
    sims = (views.unsqueeze(1) * clean[candidates]).sum(2)
    ranks = (sims >= sims[:, :1]).sum(1) - 1
    return float((1.0 / (ranks.double() + 1)).mean())


def rank_family(ranks: torch.Tensor) -> dict[str, float]:
    """Scores of the same retrieval that weigh the top of the list less than the mean
    reciprocal rank does, so a few near-duplicates ranked above an item's own copy (overlapping
    patches, burst photos) cost little: the mean percentile of the own copy (1 = always first,
    0 = always last), the mean log-rank score on the same scale (the score since December 6),
    and recall within the top 1 % and 10 % of the sample."""
    n = len(ranks)
    r = ranks.double()
    top = {share: max(1, int(share * n)) for share in (0.01, 0.1)}
    return {
        "retrieval_percentile": float(1 - (r / max(1, n - 1)).mean()),
        "retrieval_log_rank": log_rank_score(ranks, n),
        "retrieval_recall_1pc": float((r < top[0.01]).double().mean()),
        "retrieval_recall_10pc": float((r < top[0.1]).double().mean()),
    }


def candidate_parts(clean: np.ndarray, views: np.ndarray, k: int = 10) -> dict[str, float]:
    """The candidates' values for embeddings of the same items (row i of each)."""
    c = _unit(torch.from_numpy(np.ascontiguousarray(clean, dtype=np.float32)))
    v = _unit(torch.from_numpy(np.ascontiguousarray(views, dtype=np.float32)))
    mean = c.mean(0, keepdim=True)
    cc, cv = _unit(c - mean), _unit(v - mean)
    wc, wv = whitened(c, v)
    return {
        "whitened_mrr": _mrr(wc, wv),
        "centred_knn_agreement": list_agreement(neighbour_lists(cc, cc, k),
                                                neighbour_lists(cv, cc, k)),
        "centred_effective_rank": effective_rank(cc),
        "cluster_stability": cluster_stability(c, v),
        "pseudo_label_knn": pseudo_label_knn(c, v),
        "local_mrr": local_mrr(c, v, k),
        **rank_family(retrieval_ranks(c, v)),
        **{f"centred_{key}": value
           for key, value in rank_family(retrieval_ranks(cc, cv)).items()},
    }


def reference_ceiling(clean: dict[str, np.ndarray], labels: np.ndarray, is_eval: np.ndarray,
                      n_classes: int, min_gap: float, resamples: int = 2000) -> dict[str, float]:
    """Expected share of the pairs more than `min_gap` apart in measured kNN top-1 that a
    perfect score (the kNN top-1 on unlimited test queries) orders the same way: per pair,
    P(the true difference has the measured sign) = Phi(|d| / se), se from a paired bootstrap
    of the test queries (the training keys' own sampling is left out: an upper bound)."""
    keys = np.flatnonzero((labels >= 0) & ~is_eval)
    queries = np.flatnonzero((labels >= 0) & is_eval)
    lab = torch.from_numpy(labels)
    hits = {}
    for name, emb in clean.items():
        e = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))
        scores = knn_scores(e[queries], e[keys], lab[keys], n_classes, KNN_K, KNN_SIGMA)
        hits[name] = (scores.argmax(1) == lab[queries]).double().numpy()
    boot = np.random.default_rng(0).integers(0, len(queries), (resamples, len(queries)))
    probs = []
    for a, b in itertools.combinations(hits, 2):
        d = hits[a].mean() - hits[b].mean()
        if abs(d) <= min_gap:
            continue
        se = float((hits[a] - hits[b])[boot].mean(1).std())
        probs.append(0.5 * (1 + math.erf(abs(d) / se / math.sqrt(2))) if se > 0 else 1.0)
    return {"pairs": len(probs), "expected_agreement": float(np.mean(probs)) if probs else 1.0,
            "uncertain_pairs": sum(p < 0.9 for p in probs)}

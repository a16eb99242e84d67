"""Weighted kNN classification (AND_SPEC §6): the top-K cosine neighbours among labelled items
vote for their class with weight exp(s / sigma)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.discovery import DEFAULT_BLOCK_ELEMS


def vote(similarities: torch.Tensor, neighbour_labels: torch.Tensor, n_classes: int,
         sigma: float) -> torch.Tensor:
    """Q x K similarities and labels -> Q x C class scores that sum to 1 per row.

    The row maximum is subtracted before exp: the ranking is unchanged and small sigmas
    cannot overflow. The weights are computed in float64: a sigma below float32's smallest
    number (1e-45) would otherwise divide by zero.
    """
    if similarities.shape[1] == 0:
        return torch.full((similarities.shape[0], n_classes), 1.0 / n_classes)
    s = similarities.double()
    w = torch.exp((s - s.max(1, keepdim=True).values) / sigma)
    w = w.masked_fill(neighbour_labels < 0, 0.0)
    scores = torch.zeros(s.shape[0], n_classes, device=s.device, dtype=torch.float64)
    scores.scatter_add_(1, neighbour_labels.clamp(min=0), w)
    return (scores / scores.sum(1, keepdim=True).clamp(min=1e-30)).float()


@torch.no_grad()
def knn_scores(queries: torch.Tensor, keys: torch.Tensor, key_labels: torch.Tensor,
               n_classes: int, k: int = 200, sigma: float = 0.1,
               query_rows: torch.Tensor | None = None,
               block_elems: int = DEFAULT_BLOCK_ELEMS) -> torch.Tensor:
    """Class scores of each query by weighted kNN over `keys` (unit vectors).

    `query_rows`, when given, are the queries' own rows in `keys`: each query's own entry is
    left out (leave-one-out evaluation on a collection).
    """
    n = keys.shape[0]
    k_eff = min(k, n - (1 if query_rows is not None else 0))
    out = torch.empty(queries.shape[0], n_classes)
    step = max(1, block_elems // max(1, n))
    for start in range(0, queries.shape[0], step):
        sims = queries[start:start + step] @ keys.t()
        if query_rows is not None:
            sims.scatter_(1, query_rows[start:start + step].view(-1, 1), float("-inf"))
        top = sims.topk(k_eff, dim=1) if k_eff > 0 else None
        if top is None:
            out[start:start + sims.shape[0]] = 1.0 / n_classes
            continue
        out[start:start + sims.shape[0]] = vote(
            top.values, key_labels[top.indices], n_classes, sigma
        ).cpu()
    return out


@dataclass
class KnnAccuracy:
    top1: float
    top5: float
    queries: int


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> KnnAccuracy:
    labels = labels.cpu()
    top = scores.topk(min(5, scores.shape[1]), dim=1).indices
    hit = top == labels.view(-1, 1)
    return KnnAccuracy(
        top1=float(hit[:, 0].float().mean()),
        top5=float(hit.any(1).float().mean()),
        queries=int(labels.numel()),
    )

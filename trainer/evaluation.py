"""Weighted-kNN evaluation of a set of embeddings, with the protocol the labels allow.

- A labelled evaluation split (test/val) and labelled training items: the first query the
  second.
- Otherwise leave-one-out (each query's own entry excluded) over the labelled training items,
  or over the labelled evaluation items where only they carry labels; reported under `loo_`
  names so it is never mistaken for a test-split figure.
No model selection happens anywhere: these numbers are reported, never optimised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainer.knn import accuracy, knn_scores

TEST, LEAVE_ONE_OUT = "test", "leave-one-out"


@dataclass(frozen=True)
class Protocol:
    """Which rows ask (`queries`) and which vote (`keys`); leave-one-out: the same rows, each
    query's own vote left out."""

    name: str
    queries: np.ndarray
    keys: np.ndarray

    @property
    def leave_one_out(self) -> bool:
        return self.name == LEAVE_ONE_OUT

    @property
    def can_vote(self) -> bool:
        """Enough voters for a figure: one, or two when each query's own vote is left out."""
        return len(self.keys) >= (2 if self.leave_one_out else 1)


def knn_protocol(labels: np.ndarray, is_eval: np.ndarray) -> Protocol:
    """The protocol the labels allow (the module's docstring): the one rule for every kNN
    figure (runs, raw pixels, the gate, compare)."""
    labelled = labels >= 0
    queries = np.flatnonzero(labelled & is_eval)
    keys = np.flatnonzero(labelled & ~is_eval)
    if len(queries) and len(keys):
        return Protocol(TEST, queries, keys)
    pool = keys if len(keys) else queries
    return Protocol(LEAVE_ONE_OUT, pool, pool)


def knn_evaluation(embeddings: np.ndarray, labels: np.ndarray, is_eval: np.ndarray,
                   n_classes: int, k: int = 200, sigma: float = 0.1) -> dict[str, Any] | None:
    protocol = knn_protocol(labels, is_eval)
    keys, queries = protocol.keys, protocol.queries
    if n_classes < 2 or not protocol.can_vote:
        return None
    emb = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
    lab = torch.from_numpy(labels)
    key_vectors, key_labels = emb[keys], lab[keys]
    if not protocol.leave_one_out:
        scores = knn_scores(emb[queries], key_vectors, key_labels, n_classes, k, sigma)
        acc = accuracy(scores, lab[queries])
        return {"knn_top1": acc.top1, "knn_top5": acc.top5, "knn_protocol": TEST,
                "knn_queries": acc.queries, "knn_k": k, "knn_sigma": sigma}
    own_rows = torch.arange(len(keys))
    scores = knn_scores(key_vectors, key_vectors, key_labels, n_classes, k, sigma,
                        query_rows=own_rows)
    acc = accuracy(scores, key_labels)
    return {"loo_knn_top1": acc.top1, "loo_knn_top5": acc.top5,
            "knn_protocol": LEAVE_ONE_OUT, "knn_queries": acc.queries, "knn_k": k,
            "knn_sigma": sigma}


def headline(metrics: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """(top1, top5) whichever protocol produced them."""
    if not metrics:
        return None, None
    if "knn_top1" in metrics:
        return metrics["knn_top1"], metrics["knn_top5"]
    return metrics.get("loo_knn_top1"), metrics.get("loo_knn_top5")

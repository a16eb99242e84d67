"""Weighted-kNN evaluation of a set of embeddings, with the protocol the labels allow.

- A labelled evaluation split (test/val): its items query the labelled training items.
- Otherwise, labelled training items only: leave-one-out over them (each query's own entry
  excluded), reported under `loo_` names so it is never mistaken for a test-split figure.
No model selection happens anywhere: these numbers are reported, never optimised.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trainer.knn import accuracy, knn_scores


def knn_evaluation(embeddings: np.ndarray, labels: np.ndarray, is_eval: np.ndarray,
                   n_classes: int, k: int = 200, sigma: float = 0.1) -> dict[str, Any] | None:
    labelled = labels >= 0
    keys = np.flatnonzero(labelled & ~is_eval)
    queries = np.flatnonzero(labelled & is_eval)
    if len(keys) == 0 or n_classes < 2:
        return None
    emb = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
    lab = torch.from_numpy(labels)
    key_vectors, key_labels = emb[keys], lab[keys]
    if len(queries):
        scores = knn_scores(emb[queries], key_vectors, key_labels, n_classes, k, sigma)
        acc = accuracy(scores, lab[queries])
        return {"knn_top1": acc.top1, "knn_top5": acc.top5, "knn_protocol": "test",
                "knn_queries": acc.queries, "knn_k": k, "knn_sigma": sigma}
    if len(keys) < 2:
        return None
    own_rows = torch.arange(len(keys))
    scores = knn_scores(key_vectors, key_vectors, key_labels, n_classes, k, sigma,
                        query_rows=own_rows)
    acc = accuracy(scores, key_labels)
    return {"loo_knn_top1": acc.top1, "loo_knn_top5": acc.top5,
            "knn_protocol": "leave-one-out", "knn_queries": acc.queries, "knn_k": k,
            "knn_sigma": sigma}


def headline(metrics: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """(top1, top5) whichever protocol produced them."""
    if not metrics:
        return None, None
    if "knn_top1" in metrics:
        return metrics["knn_top1"], metrics["knn_top5"]
    return metrics.get("loo_knn_top1"), metrics.get("loo_knn_top5")

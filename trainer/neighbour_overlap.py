"""How much two models agree on who an item's neighbours are: the overlap of their top-k
neighbour lists, item by item, and the items whose lists changed most.

Lists are rows of item numbers in one shared numbering (the items both models hold), -1 where
a list is shorter than k; an empty place matches nothing.
"""

from __future__ import annotations

import faiss
import numpy as np

from trainer.index import SearchIndex


def list_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Q x k lists each -> Q shares: of row i's k places, how many hold an item that is also
    in row i of the other list (0 = nothing in common, 1 = the same items, in any order)."""
    if a.shape != b.shape:
        raise ValueError(f"lists of different shapes: {a.shape} and {b.shape}")
    k = a.shape[1]
    if k == 0:
        return np.zeros(len(a))
    shared = ((a[:, :, None] == b[:, None, :]) & (a[:, :, None] >= 0)).any(2)
    return shared.sum(1) / k


def changed_most(overlap: np.ndarray, count: int) -> np.ndarray:
    """Positions of the `count` lowest overlaps, lowest first; equal overlaps keep their
    order."""
    return np.argsort(overlap, kind="stable")[:max(0, count)]


def neighbour_lists(index: SearchIndex, vectors: np.ndarray, queries: np.ndarray,
                    allowed: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows), each Q x k: the `k` nearest rows of `index` to each query row (its own
    row left out), among `allowed` rows only (None: every row); rows -1 where fewer exist."""
    selector = None
    if allowed is not None and len(allowed) < index.ntotal:
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
    scores, rows = index.search(np.asarray(vectors[queries]), k + 1, selector=selector)
    scores, rows = _pad(scores, rows, k + 1)
    # The query's own row comes first, unless an approximate index missed it or an identical
    # vector ties with it: whatever place it holds is dropped, else the last one.
    own = rows == queries[:, None]
    own[~own.any(1), -1] = True
    keep = np.argsort(own, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, keep, 1), np.take_along_axis(rows, keep, 1)


def _pad(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Results of fewer than k columns (a tiny index) widened with empty places."""
    missing = k - rows.shape[1]
    if missing <= 0:
        return scores, rows
    q = len(rows)
    return (np.hstack([scores, np.full((q, missing), -np.inf, dtype=scores.dtype)]),
            np.hstack([rows, np.full((q, missing), -1, dtype=rows.dtype)]))


def renumber(rows: np.ndarray, shared_of: np.ndarray) -> np.ndarray:
    """Rows of one model -> numbers in the shared numbering (`shared_of[row]`, -1 for a row
    outside it); empty places stay -1."""
    return np.where(rows >= 0, shared_of[np.maximum(rows, 0)], -1)

"""Filtered search: which rows a filter keeps, and how an index searches only those rows.

A filter names classes (`labels`, as the API spells them) and an id prefix; an item matches when
its label is one of the classes (unlabelled items never match a label filter) and its id starts
with the prefix. A class the collection does not have matches nothing, as it does in
GET /models/{version}/items: classes come and go with the live collection, so a name unknown
now is a filter that matches no item yet, not a malformed request.

The rule for searching the base index with a filter (`search_rows`), from
bench/filtered_search.py (docs/benchmarks.md, "Filtered search"):

- At most `EXACT_ROWS` matching rows: exact search over them (a matrix product over the
  gathered rows). A filter that selective starves an approximate index: HNSW walks a graph whose
  nodes are mostly filtered out and IVF probes lists that hold few matching rows, so either
  needs a breadth that costs more than scanning the matching rows outright.
- More: the index searches with an ID selector (a bitmap of the matching rows), its breadth
  widened by the inverse of the share of rows that match (efSearch for HNSW, nprobe for IVF,
  up to `MAX_WIDENING` times the tuned breadth), so that about as many matching candidates are
  seen as an unfiltered search sees candidates.
- Any query that still comes back with fewer than k hits (or the number that match, if fewer)
  is answered exactly: k hits whenever k items match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from live import bitmaps
from trainer.index import SearchIndex

EXACT_ROWS = 4096
MIN_SHARE = 0.05
MAX_WIDENING = 16


@dataclass(frozen=True)
class ItemFilter:
    """Items whose label is one of `labels` (None: any label, or none) and whose id starts with
    `prefix` (None: any id)."""

    labels: tuple[str, ...] | None = None
    prefix: str | None = None

    def __bool__(self) -> bool:
        return self.labels is not None or bool(self.prefix)

    def keep(self, classes: Sequence[str], labels: np.ndarray, ids: Sequence[str],
             prefix_mask: Callable[[str], np.ndarray] | None = None) -> np.ndarray:
        """Which of the rows (their label indices and ids) match; `prefix_mask` answers the
        prefix part faster than scanning `ids` (the base's sorted ids)."""
        keep = np.ones(len(labels), dtype=bool)
        if self.labels is not None:
            # A table of the wanted classes, one entry more for unlabelled rows (-1, the last).
            names = set(self.labels)
            table = np.zeros(len(classes) + 1, dtype=bool)
            table[[i for i, name in enumerate(classes) if name in names]] = True
            keep &= table[labels]
        if self.prefix:
            if prefix_mask is not None:
                keep &= prefix_mask(self.prefix)
            else:
                keep &= np.fromiter((i.startswith(self.prefix) for i in ids), bool, len(ids))
        return keep


ANY = ItemFilter()  # every item


def widened(base: SearchIndex, breadth: int | None, share: float) -> int | None:
    """The search breadth that sees about as many matching candidates, filtered to `share` of
    the rows, as the tuned breadth sees candidates unfiltered."""
    if base.kind == "flat":
        return None
    key = "efSearch" if base.kind == "hnsw" else "nprobe"
    tuned = breadth or base.params[key]
    return int(min(tuned * MAX_WIDENING, np.ceil(tuned / max(share, 1e-9))))


def search_rows(base: SearchIndex, vectors: np.ndarray, mask: np.ndarray, queries: np.ndarray,
                k: int, breadth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows), each Q x min(k, matching rows), of the base rows where `mask` is set;
    rows are -1 past the hits found. See the module docstring for the rule."""
    matched = np.flatnonzero(mask)
    kk = min(k, len(matched))
    q = len(queries)
    if kk == 0:
        return np.zeros((q, 0), np.float32), np.zeros((q, 0), np.int64)
    if len(matched) <= EXACT_ROWS or len(matched) < MIN_SHARE * len(mask):
        return exact(vectors, matched, queries, kk)
    bits = bitmaps.pack(mask)
    selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
    scores, rows = base.search(queries, kk, widened(base, breadth, len(matched) / len(mask)),
                               selector)
    short = np.flatnonzero((rows >= 0).sum(axis=1) < kk)
    if len(short):
        scores[short], rows[short] = exact(vectors, matched, queries[short], kk)
    return scores, rows


def complete(vectors: np.ndarray, bits: np.ndarray, queries: np.ndarray, scores: np.ndarray,
             rows: np.ndarray, k: int) -> None:
    """In place: the queries of an HNSW or IVF search through the bitmap `bits` that came back
    with fewer hits than the rows it selects allow are searched exactly over those rows (with
    most rows filtered out, as after many deletes or with few labelled items, the graph or the
    probed lists run out of selected rows)."""
    n = len(vectors)
    found = (rows >= 0).sum(axis=1)
    if not (found < min(k, n)).any():
        return
    matched = np.flatnonzero(bitmaps.unpack(bits, n))
    kk = min(k, len(matched))
    short = np.flatnonzero(found < kk)
    if len(short):
        scores[short], rows[short] = -np.inf, -1
        scores[short, :kk], rows[short, :kk] = exact(vectors, matched, queries[short], kk)


def exact(vectors: np.ndarray, matched: np.ndarray, queries: np.ndarray,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = queries @ vectors[matched].T
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(sims, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    return (np.take_along_axis(top_scores, order, axis=1).astype(np.float32),
            matched[np.take_along_axis(top, order, axis=1)])

"""FAISS index of a collection's embeddings: cosine similarity as inner product on unit vectors.

Exact search (IndexFlatIP) up to `EXACT_MAX_ITEMS`; HNSW above it (or IVF when asked). A few
queries at a time over a large flat index are answered in two stages, exactly all the same
(trainer/exact_rerank.py). For an approximate index the search breadth (efSearch / nprobe) is
tuned at build time to the smallest value reaching `TARGET_RECALL` recall@10 against exact
search, and the measured recall is kept with the index. Row r of the index is item r of the
bundle; search parameters are passed per call, so a loaded index is never mutated and can be
shared by threads.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from trainer.exact_rerank import FEW_QUERIES, MIN_ITEMS, RerankedScan

# Every unfiltered flat search takes FAISS's BLAS path (FAISS compares this threshold with
# queries x dimension): at 50,000 items, 0.3-1 ms per query in batches of 8-64, against
# 1.5-2.8 ms for its sequential scan. Fewer queries go through exact_rerank instead.
faiss.cvar.distance_compute_blas_threshold = 20

EXACT_MAX_ITEMS = 200_000
TARGET_RECALL = 0.95
RECALL_QUERIES = 1000
HNSW_M = 32


@dataclass
class SearchIndex:
    index: faiss.Index
    kind: str  # flat | ivf | hnsw
    params: dict[str, int] = field(default_factory=dict)  # default search breadth
    recall_at_10: float | None = None
    build_s: float = 0.0
    reranked: RerankedScan | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind == "flat" and self.ntotal >= MIN_ITEMS and self.reranked is None:
            self.reranked = RerankedScan(self.index)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def search(self, queries: np.ndarray, k: int, breadth: int | None = None,
               selector: faiss.IDSelector | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each Q x k; rows are -1 where fewer than k items exist (or pass
        `selector`, which keeps only the rows it selects)."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(k, self.ntotal))
        params = self._params(breadth, selector)
        if self.reranked is not None and len(q) < FEW_QUERIES:
            return self.reranked.search(q, k, params)
        return self.index.search(q, k, params=params)

    def _params(self, breadth: int | None,
                selector: faiss.IDSelector | None = None) -> faiss.SearchParameters | None:
        extra = {"sel": selector} if selector is not None else {}
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=breadth or self.params["efSearch"],
                                              **extra)
        if self.kind == "ivf":
            return faiss.SearchParametersIVF(nprobe=breadth or self.params["nprobe"], **extra)
        return faiss.SearchParameters(**extra) if extra else None

    def memory_bytes(self) -> int:
        """What the index holds in memory, from its shape (serialising a large index to
        measure it would copy it): the stored vectors, plus HNSW's links (2M at level 0,
        about M more above), IVF's ids and centroids, or a large flat index's fp16 codes."""
        n, d = self.ntotal, self.dim
        size = n * d * 4
        if self.kind == "hnsw":
            size += n * (3 * HNSW_M * 4 + 16)
        elif self.kind == "ivf":
            size += n * 8 + int(getattr(self.index, "nlist", 0)) * d * 4
        if self.reranked is not None:
            size += self.reranked.memory_bytes
        return size

    def describe(self) -> dict[str, Any]:
        return {"type": self.kind, "params": dict(self.params), "recall_at_10": self.recall_at_10,
                "recall_queries": f"{RECALL_QUERIES} held-out items (leave-one-out)",
                "build_s": round(self.build_s, 3), "ntotal": self.ntotal}


def choose_kind(n: int, requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return "flat" if n <= EXACT_MAX_ITEMS else "hnsw"


def build(vectors: np.ndarray, kind: str = "auto", seed: int = 0) -> SearchIndex:
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    kind = choose_kind(n, kind)
    t0 = time.perf_counter()
    if kind == "flat":
        index: faiss.Index = faiss.IndexFlatIP(d)
        index.add(x)
        built = SearchIndex(index, "flat", {}, 1.0)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.add(x)
        built = SearchIndex(index, "hnsw", {"efSearch": 64})
        _tune(built, x, "efSearch", [16, 32, 64, 128, 256, 512], seed)
    elif kind == "ivf":
        nlist = int(max(1, min(4 * np.sqrt(n), n // 39)))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = x[rng.choice(n, size=min(n, 256 * nlist), replace=False)]
        index.train(sample)
        index.add(x)
        built = SearchIndex(index, "ivf", {"nprobe": 1})
        _tune(built, x, "nprobe", [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256) if p <= nlist]
              or [1], seed)
    else:
        raise ValueError(f"unknown index type {kind!r}")
    built.build_s = time.perf_counter() - t0
    return built


def recall_at_10(built: SearchIndex, x: np.ndarray, breadth: int | None = None,
                 seed: int = 0, n_queries: int = RECALL_QUERIES) -> float:
    """Recall@10 of the index against exact search, on items of the collection used as
    queries with their own entry left out of both answers."""
    probe = _Probe(x, seed, n_queries)
    return probe.recall(built, breadth)


class _Probe:
    """Held-out queries and their exact answers, computed once for several breadths."""

    def __init__(self, x: np.ndarray, seed: int, n_queries: int) -> None:
        n = x.shape[0]
        rng = np.random.default_rng(seed)
        self.rows = rng.choice(n, size=min(n, n_queries), replace=False)
        self.queries = x[self.rows]
        self.k = min(10, n - 1)
        exact = faiss.IndexFlatIP(x.shape[1])
        exact.add(x)
        _, truth = exact.search(self.queries, self.k + 1)
        self.truth = [[i for i in t if i != r][:self.k] for r, t in
                      zip(self.rows, truth, strict=True)]

    def recall(self, built: SearchIndex, breadth: int | None) -> float:
        if self.k < 1:
            return 1.0
        _, found = built.search(self.queries, self.k + 1, breadth)
        hits = sum(len(set(t) & {i for i in f if i != r and i >= 0})
                   for r, t, f in zip(self.rows, self.truth, found, strict=True))
        return hits / (len(self.rows) * self.k)


def _tune(built: SearchIndex, x: np.ndarray, key: str, candidates: list[int], seed: int) -> None:
    """Smallest breadth reaching TARGET_RECALL (else the largest tried)."""
    probe = _Probe(x, seed, RECALL_QUERIES)
    recall = 0.0
    for value in candidates:
        recall = probe.recall(built, value)
        built.params[key] = value
        if recall >= TARGET_RECALL:
            break
    built.recall_at_10 = recall


def save(built: SearchIndex, path: str | os.PathLike[str]) -> None:
    faiss.write_index(built.index, os.fspath(path))


def load(path: str | os.PathLike[str], described: dict[str, Any]) -> SearchIndex:
    index = faiss.read_index(os.fspath(path))
    return SearchIndex(index, described["type"], dict(described.get("params", {})),
                       described.get("recall_at_10"), described.get("build_s", 0.0))

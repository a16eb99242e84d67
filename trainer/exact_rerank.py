"""Exact top-k of a few queries in two stages: a scan of half-precision codes, then the float
vectors of its best candidates, with a bound that proves no other item could have entered the
answer.

Why: a lone exact query over 50,000 x 128 float vectors reads 25.6 MB, and on a 2-core machine
FAISS's flat scan takes 2.6-7 ms for it, depending on the path it picks. Codes of two bytes per
dimension (IEEE fp16) are half of that: FAISS scans them in about 2 ms on the slowest machine
measured (3.4 ms for the flat scan), and the candidates' exact scores cost microseconds. They
scanned a fifth faster there than codes of one byte per dimension, whose per-dimension
scaling costs more to undo than the extra bytes cost to read, and their coding error is 30
times smaller, so the bound below proves more answers (docs/benchmarks.md, machine H).

The proof. Each stored vector x is coded as x' with |x - x'| <= E (E, the largest coding error,
is measured over the collection when the codes are made). For a query q, Cauchy-Schwarz gives
|q.x - q.x'| <= |q| E. Let the scan keep the C items of highest q.x', the C-th scoring a, and let
s be the k-th best exact score among those C. An item outside them has q.x' <= a, so its exact
score is at most a + |q| E: if that is below s, the exact top k are among the C candidates.
Otherwise (scores packed tighter than the coding error, as for a collapsed encoder), the query
falls back to the flat scan. Either way the answer is the flat index's, up to float rounding
between equal scores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

FEW_QUERIES = 8  # from 8 queries up, FAISS's BLAS path costs less per query than the codes
MIN_ITEMS = 10_000  # below this a flat scan takes well under a millisecond
EXTRA_CANDIDATES = 32  # beyond k: room for the neighbours that coding errors reorder
SLACK = 1e-4  # float rounding of the two dot products (128 terms: ~1e-5), with room to spare
_CODING_CHUNK = 65_536


def _thread_per_query(search: Callable[..., tuple[np.ndarray, np.ndarray]], queries: np.ndarray,
                      *args: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """`search` on at most one OpenMP thread per query. FAISS splits a scan of codes by query,
    so a second thread has nothing to do for a lone query, yet it spins while it waits: the
    server burned two cores per lone query. The thread count is the calling thread's own
    (OpenMP keeps one per thread), and it is restored for whatever that thread runs next."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, min(before, len(queries))))
    try:
        return search(queries, *args, **kwargs)
    finally:
        faiss.omp_set_num_threads(before)


class RerankedScan:
    """fp16 codes of a flat inner-product index's vectors, searched as the module describes.
    The flat index is read, never modified; both are safe to search from several threads."""

    def __init__(self, flat: faiss.IndexFlat) -> None:
        n, d = int(flat.ntotal), int(flat.d)
        self.flat = flat
        # A view of the flat index's own storage: no copy, alive as long as `flat` is.
        self.vectors = faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)
        self.codes = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16,
                                                faiss.METRIC_INNER_PRODUCT)
        self.codes.train(self.vectors)  # nothing to learn for fp16; kept for any other code
        self.codes.add(self.vectors)
        self.error_bound = self._largest_coding_error()

    def _largest_coding_error(self) -> float:
        worst = 0.0
        for start in range(0, len(self.vectors), _CODING_CHUNK):
            x = self.vectors[start:start + _CODING_CHUNK]
            decoded = self.codes.sa_decode(self.codes.sa_encode(x))
            worst = max(worst, float(np.linalg.norm(x - decoded, axis=1).max()))
        return worst

    @property
    def memory_bytes(self) -> int:
        return int(self.codes.ntotal) * int(self.codes.code_size)

    def search(self, queries: np.ndarray, k: int,
               params: faiss.SearchParameters | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each Q x k, as `flat.search` answers them (rows -1 and scores
        -FLT_MAX past the items that `params`' selector lets through)."""
        n = len(self.vectors)
        k = max(1, min(k, n))
        wide = min(n, k + EXTRA_CANDIDATES)
        approx, candidates = _thread_per_query(self.codes.search, queries, wide, params=params)
        scores = np.full((len(queries), k), -np.finfo(np.float32).max, dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        unproven = []
        for i, q in enumerate(queries):
            found = candidates[i][candidates[i] >= 0]
            exact = self.vectors[found] @ q
            best = np.argsort(-exact, kind="stable")[:k]
            # Fewer candidates than asked (or all n) means every selectable item was scanned.
            everything = len(found) < wide or wide == n
            outside = float(approx[i, -1]) + float(np.linalg.norm(q)) * self.error_bound + SLACK
            if not everything and outside >= exact[best[-1]]:
                unproven.append(i)
                continue
            scores[i, :len(best)], rows[i, :len(best)] = exact[best], found[best]
        if unproven:
            scores[unproven], rows[unproven] = self.flat.search(queries[unproven], k,
                                                                params=params)
        return scores, rows

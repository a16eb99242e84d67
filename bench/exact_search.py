"""Exact search of a few queries: FAISS's flat scan against the two-stage search of
trainer/exact_rerank.py (fp16 codes, then the candidates' float vectors), at several sizes.

Items are embedding-like clustered unit vectors (bench.serve.embedding_like); queries are items
of the collection, sent in batches of 1, 4, 8 and 16 as the query routes send them. For each size:
milliseconds per call (p50, p99) and CPU milliseconds per call, for FAISS's flat index with its
default OpenMP team (the path every exact search took before) and for the two stages; how often
the bound could not prove the answer (the query then falls back to the flat scan); and whether
both give the same items (up to float rounding between equal scores: the k-th scores compared).

    python -m bench.exact_search [--sizes 10000 50000 200000] [--queries 500] [--out FILE]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.common import report
from bench.serve import embedding_like
from trainer import index as faiss_index
from trainer.exact_rerank import RerankedScan

K = 10


class CountingFlat:
    """The flat index behind the two stages, counting the queries that fall back to it."""

    def __init__(self, scan: RerankedScan) -> None:
        self.flat, self.queries = scan.flat, 0

    def search(self, q: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
        self.queries += len(q)
        return self.flat.search(q, k, params=params)


def timed(search: Callable[[np.ndarray], Any], queries: np.ndarray,
          batch: int) -> dict[str, float]:
    walls, cpu0 = [], time.process_time()
    calls = len(queries) // batch
    for i in range(calls):
        t0 = time.perf_counter()
        search(queries[i * batch:(i + 1) * batch])
        walls.append(time.perf_counter() - t0)
    ms = 1000 * np.asarray(walls)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "cpu_ms_per_call": round(1000 * (time.process_time() - cpu0) / calls, 3)}


def one_size(n: int, n_queries: int, seed: int) -> dict[str, Any]:
    x = embedding_like(n, seed=seed)
    t0 = time.perf_counter()
    built = faiss_index.build(x, "flat")
    build_s = time.perf_counter() - t0
    scan = built.reranked if built.reranked is not None else RerankedScan(built.index)
    rng = np.random.default_rng(seed + 1)
    queries = x[rng.choice(n, size=min(n, n_queries), replace=False)]
    out: dict[str, Any] = {"items": n, "build_s": round(build_s, 3),
                           "error_bound": round(scan.error_bound, 5),
                           "codes_mb": round(scan.memory_bytes / 2**20, 1)}
    for batch in (1, 4, 8, 16):
        out[f"flat_batch_{batch}"] = timed(lambda q: built.index.search(q, K), queries, batch)
        out[f"two_stage_batch_{batch}"] = timed(lambda q: scan.search(q, K), queries, batch)
    counting = CountingFlat(scan)
    scan.flat = counting
    try:
        kth = []
        for q in queries:
            mine, _ = scan.search(q[None], K)
            flat, _ = counting.flat.search(q[None], K)
            kth.append(abs(float(mine[0, -1]) - float(flat[0, -1])))
    finally:
        scan.flat = counting.flat
    out["fallback_share"] = round(counting.queries / len(queries), 4)
    out["largest_kth_score_difference"] = float(max(kth))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    results = []
    for n in args.sizes:
        results.append(one_size(n, args.queries, args.seed))
        print(results[-1], flush=True)
    report("exact_search", results, args.out)


if __name__ == "__main__":
    main()

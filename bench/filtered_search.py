"""Filtered search: recall@10 against exact filtered search, and milliseconds per query, for
label filters matching 1, 2, 5, 10 and 50 % of the items, on HNSW and IVF indexes.

Items are embedding-like clustered vectors (bench.serve.embedding_like), each with one of 100
labels drawn at random (independent of the vector: the hard case, matching items scattered over
every cluster); a filter of n labels matches n %. Queries are held-out
points of the same distribution, sent one per call as /neighbours does. Each index kind is
searched four ways:

    selector   the index with an ID selector of the matching rows, at its tuned breadth
    widened    the same, breadth widened by 1 / share (live/filters.py `widened`)
    exact      a matrix product over the matching rows
    served     LiveIndex.search with the filter: the rule of live/filters.py

    nice -n 10 python -m bench.filtered_search [--items 100000] [--dim 128] [--queries 200]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import faiss
import numpy as np

from bench.common import report
from bench.serve import embedding_like
from live import filters
from live.filters import ItemFilter
from live.index import LiveIndex
from trainer import index as faiss_index

SHARES = (0.01, 0.02, 0.05, 0.10, 0.50)  # 2 and 5 % place live/filters.py's MIN_SHARE
LABELS = 100


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    hits = sum(len(set(f) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def timed(search: Any, queries: np.ndarray) -> tuple[list[list[int]], float]:
    out = []
    started = time.perf_counter()
    for q in queries:
        out.append([int(r) for r in search(q[None]) if r >= 0])
    return out, (time.perf_counter() - started) * 1000 / len(queries)


def measure(built: faiss_index.SearchIndex, live: LiveIndex, base: np.ndarray,
            labels: np.ndarray, queries: np.ndarray, wanted: int) -> dict[str, Any]:
    """Each way of searching with a filter of the first `wanted` labels."""
    only = ItemFilter(labels=tuple(live.classes[:wanted]))
    mask = labels < wanted
    matched = np.flatnonzero(mask)
    truth = matched[np.argsort(-(queries @ base[matched].T), axis=1)[:, :10]]
    bits = np.packbits(mask, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
    wide = filters.widened(built, None, len(matched) / len(mask))
    ways = {
        "selector": lambda q: built.search(q, 10, None, selector)[1][0],
        "widened": lambda q: built.search(q, 10, wide, selector)[1][0],
        "exact": lambda q: filters.exact(base, matched, q, 10)[1][0],
        "served": lambda q: [int(i[5:]) for i in live.search(q, 10, only=only).ids[0]],
    }
    row: dict[str, Any] = {"index": built.kind, "share": len(matched) / len(mask),
                           "matching": len(matched), "tuned": built.params,
                           "widened_breadth": wide,
                           "served_path": "exact" if len(matched) <= filters.EXACT_ROWS
                           else "index + selector"}
    for name, search in ways.items():
        found, ms = timed(search, queries)
        row[name] = {"recall_at_10": round(recall(found, truth), 4),
                     "ms_per_query": round(ms, 3),
                     "short_answers": sum(len(f) < 10 for f in found)}
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--out", default="bench/results/filtered_search.json")
    args = p.parse_args()
    x = embedding_like(args.items + args.queries, args.dim)
    base, queries = x[:args.items], x[args.items:]
    rng = np.random.default_rng(1)
    labels = rng.integers(0, LABELS, args.items)
    classes = [f"c{i:02d}" for i in range(LABELS)]
    ids = [f"item/{i:06d}" for i in range(args.items)]
    results: list[dict[str, Any]] = []
    for kind in ("hnsw", "ivf"):
        t0 = time.perf_counter()
        built = faiss_index.build(base, kind)
        print(f"{kind}: built in {time.perf_counter() - t0:.1f}s, {built.params}, "
              f"recall@10 {built.recall_at_10:.3f}", flush=True)
        live = LiveIndex(built, base, ids, labels, classes)
        for share in SHARES:
            row = measure(built, live, base, labels, queries, round(share * LABELS))
            print(row, flush=True)
            results.append(row)
    report("filtered_search", {"items": args.items, "dim": args.dim, "queries": args.queries,
                               "labels": LABELS, "exact_rows": filters.EXACT_ROWS,
                               "max_widening": filters.MAX_WIDENING, "rows": results},
           args.out)


if __name__ == "__main__":
    main()

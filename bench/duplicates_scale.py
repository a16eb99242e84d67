"""The near-duplicate listing's cost as a collection grows: the time `GET
/models/{version}/duplicates` takes to find every pair (live/duplicates.find_pairs: one 10-NN
query per item through the live index the API serves), and whether it finds the pairs planted.

    python -m bench.duplicates_scale [--sizes 100000 1000000] [--every 50] [--widen 1 4]
                                     [--out FILE]

Embedding-like vectors (clustered, low-rank: bench/serve.py's) at dim 128; every `--every`-th
item is followed by a planted near-copy (the item plus noise of norm 0.02: cosine about
0.9998, as a re-encoded image under a trained model). The index is the one a bundle of that size
gets (`trainer.index.build`, "auto": exact up to 200,000 items, HNSW above, tuned to recall@10
0.95), timed apart. Pairs are listed at the default DUPLICATE_THRESHOLD, once per `--widen`
factor (the search breadth, efSearch or nprobe, times that factor; 1 is the tuned one, and
live/duplicates.WIDEN the listing's default); recall is over the planted pairs, and any other
pair found is counted.
"""

from __future__ import annotations

import argparse
import os
import time

import faiss
import numpy as np

from bench.common import report
from bench.serve import embedding_like
from live.duplicates import find_pairs
from live.index import LiveIndex
from service.settings import ServiceSettings
from trainer.index import build

NOISE = 0.02


def planted(n: int, every: int, seed: int = 0) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """n unit vectors, item i*every + 1 a near-copy of item i*every; the planted pairs."""
    x = embedding_like(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    originals = np.arange(0, n - 1, every)
    noise = rng.normal(size=(len(originals), x.shape[1])).astype(np.float32)
    noise *= NOISE / np.linalg.norm(noise, axis=1, keepdims=True)
    copies = x[originals] + noise
    x[originals + 1] = copies / np.linalg.norm(copies, axis=1, keepdims=True)
    return x, {(int(a), int(a) + 1) for a in originals}


def measure(n: int, every: int, threshold: float, widen: list[int]) -> list[dict]:
    x, pairs = planted(n, every)
    started = time.perf_counter()
    index = build(x)
    build_s = time.perf_counter() - started
    ids = [f"item/{i:07d}.jpg" for i in range(n)]
    position = {item: i for i, item in enumerate(ids)}
    live = LiveIndex(index, x, ids, np.full(n, -1, dtype=np.int64), [])
    tuned = next(iter(index.params.values()), None)
    rows = []
    for factor in widen if tuned is not None else [1]:
        breadth = tuned * factor if tuned is not None else None
        started = time.perf_counter()
        found = find_pairs(live, threshold, breadth=breadth)
        list_s = time.perf_counter() - started
        listed = {tuple(sorted((position[found.ids[a]], position[found.ids[b]])))
                  for a, b in zip(found.a, found.b, strict=True)}
        hits = len(listed & pairs)
        rows.append({"items": n, "index": index.kind, "index_params": index.params,
                     "index_recall_at_10": index.recall_at_10,
                     "index_build_s": round(build_s, 1), "breadth": breadth,
                     "list_s": round(list_s, 1), "items_per_s": round(n / list_s),
                     "planted_pairs": len(pairs), "found_planted": hits,
                     "recall": round(hits / len(pairs), 4), "other_pairs": len(listed) - hits,
                     "crowded": found.crowded, "threshold": threshold})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000])
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--widen", nargs="+", type=int, default=[1, 4])
    p.add_argument("--out", default=None)
    args = p.parse_args()
    threshold = ServiceSettings.model_fields["duplicate_threshold"].default
    load_before = os.getloadavg()
    rows = [row for n in args.sizes for row in measure(n, args.every, threshold, args.widen)]
    report("duplicates_scale", {"faiss_threads": faiss.omp_get_max_threads(),
                                "load_average_before": [round(v, 2) for v in load_before],
                                "load_average_after": [round(v, 2) for v in os.getloadavg()],
                                "rows": rows}, args.out)


if __name__ == "__main__":
    main()

"""How long a published model's 2-D map takes (PCA, then t-SNE: trainer/embedding_map.py), by
collection size and MAP_POINTS: the figures behind the setting's default and its description.

    python -m bench.map_speed [--items 2000 10000 50000] [--points 500 2000 10000 50000]
                              [--out FILE]

The vectors are unit vectors in 128 dimensions drawn around 20 random centres (an embedding of
a collection with some structure; t-SNE's cost depends on the count, barely on the values).
A map of `points` of a collection of `items` costs what a map of min(items, points) costs, so
each distinct count is timed once. The load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

from bench.common import report
from trainer import embedding_map


def clustered(n: int, dim: int = 128, centres: int = 20, spread: float = 0.35,
              seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    middle = rng.standard_normal((centres, dim))
    x = middle[rng.integers(0, centres, n)] + spread * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, nargs="+", default=[2_000, 10_000, 50_000])
    p.add_argument("--points", type=int, nargs="+",
                   default=[500, 2_000, 10_000, embedding_map.MAX_POINTS])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    embedding_map.compute(clustered(100))  # imports and first calls out of the timings
    load_before = os.getloadavg()[0]
    seconds: dict[int, float] = {}
    rows: list[dict[str, Any]] = []
    for items in args.items:
        vectors = clustered(items)
        for points in args.points:
            shown = min(items, points)
            if shown not in seconds:
                start = time.perf_counter()
                rows_, _ = embedding_map.compute(vectors, points)
                seconds[shown] = time.perf_counter() - start
                assert len(rows_) == shown
            rows.append({"items": items, "map_points": points, "shown": shown,
                         "seconds": round(seconds[shown], 2)})
            print(f"{items:>7} items, MAP_POINTS {points:>6}: {shown:>6} points in "
                  f"{seconds[shown]:6.1f} s", flush=True)
    report("map_speed", {"rows": rows, "load_before": load_before,
                         "load_after": os.getloadavg()[0]}, args.out)


if __name__ == "__main__":
    main()

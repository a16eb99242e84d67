"""Can two recorded candidates together order the panels as kNN does? An offline search over
the label-free benchmark's raw JSON (every candidate's value for every encoder):

    python -m bench.label_free_combinations [--builds 4 5 6] [--top 12] [--out FILE]

Each candidate alone, then each pair of candidates summed after standardising each over the
panel (z) or replacing it by its rank: the share of pairs more than 2 kNN points apart that the
sum orders as kNN does, on every collection of every build, with the worst and the mean. The
pairs are chosen on the same builds that judge them, so the figures are an upper bound on what
such a combination would do on a new build.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable

import numpy as np

from bench.common import REPO, report
from bench.label_free import pairs_agreement

LOWER_IS_BETTER = {"alignment", "uniformity"}
Scale = Callable[[np.ndarray], np.ndarray]
SCALES: dict[str, Scale] = {
    "z": lambda v: (v - v.mean()) / (v.std() + 1e-12),
    "rank": lambda v: np.argsort(np.argsort(v)).astype(float),
}


def _values(collection: dict, part: str) -> np.ndarray:
    v = np.array([collection["parts"][e][part] for e in collection["knn_top1"]], dtype=float)
    return -v if part in LOWER_IS_BETTER else v


def _agreement(cells: list[dict], score: Callable[[dict], np.ndarray]) -> list[float]:
    return [pairs_agreement(list(c["knn_top1"].values()), list(score(c)))[0] for c in cells]


def _row(name: str, shares: list[float]) -> dict:
    a = np.array(shares)
    return {"candidate": name, "worst": round(float(a.min()), 4), "mean": round(float(a.mean()), 4),
            "at_90": int((a >= 0.9).sum()), "cells": len(a)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--builds", type=int, nargs="+", default=[4, 5, 6])
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    cells = []
    for build in args.builds:
        path = REPO / "bench" / "results" / f"label_free_build{build}.json"
        cells += list(json.loads(path.read_text())["results"]["collections"].values())
    parts = list(next(iter(cells[0]["parts"].values())))
    singles = [_row(part, _agreement(cells, lambda c, part=part: _values(c, part)))
               for part in parts]
    pairs = [_row(f"{a} + {b} ({kind})", _agreement(
                 cells, lambda c, a=a, b=b, f=f: f(_values(c, a)) + f(_values(c, b))))
             for a, b in itertools.combinations(parts, 2) for kind, f in SCALES.items()]
    order = lambda r: (-r["worst"], -r["mean"])  # noqa: E731
    results = {"builds": args.builds, "collection_builds": len(cells),
               "candidates": len(parts), "pairs_tried": len(pairs),
               "singles": sorted(singles, key=order)[:args.top],
               "pairs": sorted(pairs, key=order)[:args.top],
               "pairs_at_90_everywhere": sum(r["at_90"] == r["cells"] for r in pairs),
               "most_at_90": max(r["at_90"] for r in pairs)}
    for title in ("singles", "pairs"):
        print(title)
        for r in results[title]:
            print(f"  worst {r['worst']:.3f}  mean {r['mean']:.3f}  at 90 %: "
                  f"{r['at_90']}/{r['cells']}  {r['candidate']}")
    report("label_free_combinations", results, args.out)


if __name__ == "__main__":
    main()

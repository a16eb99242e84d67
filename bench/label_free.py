"""Validation of the label-free score (trainer/label_free.py) against labelled kNN accuracy.

    python -m bench.label_free [--collections digits cifar10 ...] [--out bench/results/...]

On labelled collections, a panel of encoders spread in quality (bench/label_free_panel.py:
untrained networks of two backbones, Instance and AND at several budgets, a collapsed one,
raw pixels) is scored twice: by weighted-kNN top-1 on the labelled test split, and by the
label-free score with the labels hidden. Reported per collection and per candidate score:
  - pairs agreement: of the pairs of encoders whose kNN top-1 differ by more than 2 points,
    the share the score orders the same way;
  - Kendall's tau between the two rankings;
  - the score's noise: std over three seeds of the views and over three random 80 %
    resamples of the items, and the gap between two training seeds of the same run.
The candidates include those of bench/label_free_candidates.py (whitened retrieval, centred
k-NN agreement and effective rank, cluster stability, pseudo-label kNN, local retrieval).
Per collection also: the agreement a perfect score could expect given the kNN reference's
own noise, and a summary with the leave-one-collection-out pick of the best candidate.
Trained encoders and embeddings are cached under var/label_free/, so reruns are cheap.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable

import numpy as np
import torch

from bench.common import report
from bench.label_free_candidates import candidate_parts, reference_ceiling
from bench.label_free_panel import COLLECTIONS, VIEWS, collection_dir, panel_embeddings
from trainer.data import open_collection
from trainer.label_free import DEFAULT_AUGMENTATION, DEFAULT_K, combine, parts_of

MIN_GAP = 0.02  # kNN top-1 difference (2 points) above which the order of a pair must hold
WIDE_GAP = 0.05  # the same for clear differences only
RESAMPLES = 3
RESAMPLE_SHARE = 0.8
# Candidate scores: name -> function of the parts, higher is better.
CANDIDATES: dict[str, Callable[[dict[str, float]], float]] = {
    "score": combine,
    "retrieval_top1": lambda p: p["retrieval_top1"],
    "retrieval_mrr": lambda p: p["retrieval_mrr"],
    "centred_mrr": lambda p: p["centred_mrr"],
    "knn_agreement": lambda p: p["knn_agreement"],
    "neighbour_top1": lambda p: p["neighbour_top1_agreement"],
    "rankme": lambda p: p["effective_rank"],
    "rankme_share": lambda p: p["effective_rank_share"],
    "neg_alignment": lambda p: -p["alignment"],
    "neg_uniformity": lambda p: -p["uniformity"],
    "align_uniform": lambda p: -p["alignment"] - p["uniformity"],
    # bench/label_free_candidates.py
    "whitened_mrr": lambda p: p["whitened_mrr"],
    "centred_knn_agreement": lambda p: p["centred_knn_agreement"],
    "centred_rankme": lambda p: p["centred_effective_rank"],
    "cluster_stability": lambda p: p["cluster_stability"],
    "pseudo_label_knn": lambda p: p["pseudo_label_knn"],
    "local_mrr": lambda p: p["local_mrr"],
    **{f"{centred}retrieval_{name}": (lambda key: lambda p: p[key])(
        f"{centred}retrieval_{name}")
       for centred in ("", "centred_")
       for name in ("percentile", "log_rank", "recall_1pc", "recall_10pc")},
}


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b (ties in either list count in neither direction)."""
    concordant = discordant = ties_a = ties_b = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
        if da == 0 and db == 0:
            continue
        if da == 0:
            ties_a += 1
        elif db == 0:
            ties_b += 1
        elif da == db:
            concordant += 1
        else:
            discordant += 1
    denom = np.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return float((concordant - discordant) / denom) if denom else 0.0


def pairs_agreement(knn: list[float], score: list[float],
                    min_gap: float = MIN_GAP) -> tuple[float, int, list[tuple[int, int]]]:
    """Share of the pairs with |kNN difference| > min_gap that the score orders the same
    way, their number, and the pairs it orders the other way."""
    wrong: list[tuple[int, int]] = []
    total = 0
    for i, j in itertools.combinations(range(len(knn)), 2):
        if abs(knn[i] - knn[j]) <= min_gap:
            continue
        total += 1
        if np.sign(knn[i] - knn[j]) != np.sign(score[i] - score[j]):
            wrong.append((i, j))
    return (1.0 - len(wrong) / total if total else 1.0), total, wrong


def gate_precision(knn: list[float], score: list[float], margin: float,
                   min_gap: float = MIN_GAP) -> tuple[float, int]:
    """Of the pairs whose scores differ by more than `margin` (a gate would pick the higher),
    the share where the higher-scored encoder is not worse by more than `min_gap` in kNN
    top-1, and the number of such pairs."""
    ok = total = 0
    for i, j in itertools.combinations(range(len(knn)), 2):
        if abs(score[i] - score[j]) <= margin:
            continue
        total += 1
        hi, lo = (i, j) if score[i] > score[j] else (j, i)
        ok += knn[hi] >= knn[lo] - min_gap
    return (ok / total if total else 1.0), total


def study(collection: str, k: int = DEFAULT_K, panel_seed: int = 0) -> dict:
    panel = panel_embeddings(collection, panel_seed=panel_seed)
    names = list(panel)
    knn = [panel[n]["knn_top1"] for n in names]
    parts: dict[str, dict] = {}
    for name in names:
        clean, views = panel[name]["clean"], panel[name]["views"]
        per_view = {f"{aug}_{s}": {**parts_of(clean, views[(aug, s)], k),
                                   **candidate_parts(clean, views[(aug, s)], k)}
                    for aug, s in VIEWS}
        rng = np.random.default_rng(0)
        resampled = []
        for _ in range(RESAMPLES):
            rows = np.sort(rng.choice(len(clean), int(RESAMPLE_SHARE * len(clean)),
                                      replace=False))
            resampled.append(parts_of(clean[rows], views[(DEFAULT_AUGMENTATION, 0)][rows], k))
        parts[name] = {"views": per_view, "resampled": resampled}
    candidates = {}
    for cand, fn in CANDIDATES.items():
        by_aug = {}
        for aug in sorted({a for a, _ in VIEWS}):
            scores = [fn(parts[n]["views"][f"{aug}_0"]) for n in names]
            agree, total, wrong = pairs_agreement(knn, scores)
            agree5, total5, _ = pairs_agreement(knn, scores, WIDE_GAP)
            seeds = [[fn(parts[n]["views"][f"{a}_{s}"]) for a, s in VIEWS if a == aug]
                     for n in names]
            # The resamples are of the default augmentation's first view, and only of the
            # parts trainer/label_free.py computes (the other candidates: view seeds only).
            try:
                resample = [[fn(p) for p in parts[n]["resampled"]] for n in names]
            except KeyError:
                resample = []
            by_aug[aug] = {
                "scores": dict(zip(names, scores, strict=True)),
                "pairs_agreement": agree, "pairs": total,
                "pairs_agreement_wide": agree5, "pairs_wide": total5,
                "wrong_pairs": [f"{names[i]} vs {names[j]}" for i, j in wrong],
                "kendall_tau": kendall_tau(knn, scores),
                "view_seed_std": float(np.mean([np.std(s) for s in seeds])) if len(
                    seeds[0]) > 1 else None,
                "resample_std": float(np.mean([np.std(s) for s in resample])) if (
                    resample) else None,
            }
        candidates[cand] = by_aug
    seed_gap = None
    if "instance-3" in panel and "instance-3-seed1" in panel:
        fn = CANDIDATES["score"]
        seed_gap = abs(fn(parts["instance-3"]["views"][f"{DEFAULT_AUGMENTATION}_0"])
                       - fn(parts["instance-3-seed1"]["views"][f"{DEFAULT_AUGMENTATION}_0"]))
    c = open_collection(collection_dir(collection, panel_seed))
    ceiling = reference_ceiling({n: panel[n]["clean"] for n in names}, c.labels, c.is_eval,
                                len(c.classes), MIN_GAP)
    return {"knn_top1": dict(zip(names, knn, strict=True)), "candidates": candidates,
            "reference_ceiling": ceiling,
            "parts": {n: parts[n]["views"][f"{DEFAULT_AUGMENTATION}_0"] for n in names},
            "training_seed_gap": seed_gap}


def _table(results: dict) -> None:
    print(f"\n{'collection':18s} {'candidate':16s} {'aug':6s} {'pairs%':>7s} {'n':>4s} "
          f"{'>5pt%':>6s} {'n':>4s} {'tau':>6s} {'seed sd':>8s} {'resample sd':>11s}")
    for coll, res in results["collections"].items():
        for cand, by_aug in res["candidates"].items():
            for aug, r in by_aug.items():
                sd = r["view_seed_std"]
                resample = r["resample_std"] if aug == DEFAULT_AUGMENTATION else None
                print(f"{coll:18s} {cand:16s} {aug:6s} {100 * r['pairs_agreement']:7.1f} "
                      f"{r['pairs']:4d} {100 * r['pairs_agreement_wide']:6.1f} "
                      f"{r['pairs_wide']:4d} {r['kendall_tau']:6.3f} "
                      f"{'' if sd is None else f'{sd:8.4f}':>8s} "
                      f"{'' if resample is None else f'{resample:11.4f}':>11s}")
    for coll, res in results["collections"].items():
        score = res["candidates"]["score"][DEFAULT_AUGMENTATION]["scores"]
        print(f"\n{coll}: member, kNN top-1, score")
        for name, top1 in sorted(res["knn_top1"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:20s} {top1:.3f} {score[name]:.4f}")


def summary(results: dict) -> dict:
    """Per candidate and view: the agreement on every collection, its minimum, and the
    leave-one-collection-out check of picking the candidate with the best minimum on the
    other collections (the held-out collection's agreement of the one picked)."""
    colls = list(results["collections"])
    table = {}
    for cand in CANDIDATES:
        for aug in sorted({a for a, _ in VIEWS}):
            agree = [results["collections"][c]["candidates"][cand][aug]["pairs_agreement"]
                     for c in colls]
            table[f"{cand}/{aug}"] = dict(zip(colls, agree, strict=True))
    held_out = {}
    # Leaving a collection out needs another to pick on.
    for out in colls if len(colls) > 1 else []:
        best = max(table, key=lambda key: min(v for c, v in table[key].items() if c != out))
        held_out[out] = {"picked": best, "agreement": table[best][out]}
    return {"agreement": table, "leave_one_out": held_out}


def _print_summary(results: dict) -> None:
    s = results["summary"]
    colls = list(results["collections"])
    print(f"\n{'candidate/view':32s} " + " ".join(f"{c[:13]:>13s}" for c in colls) + "   min")
    for key, agree in sorted(s["agreement"].items(), key=lambda kv: -min(kv[1].values())):
        print(f"{key:32s} " + " ".join(f"{100 * agree[c]:13.1f}" for c in colls)
              + f" {100 * min(agree.values()):5.1f}")
    for c, r in results["collections"].items():
        ceiling, lo = r["reference_ceiling"], s["leave_one_out"].get(c)
        picked = "" if lo is None else (
            f"; picked without it: {lo['picked']}, {100 * lo['agreement']:.1f} %")
        print(f"{c}: a perfect score would agree on {100 * ceiling['expected_agreement']:.1f} "
              f"% of {ceiling['pairs']} pairs{picked}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collections", nargs="+", default=list(COLLECTIONS),
                   choices=list(COLLECTIONS))
    p.add_argument("--k", type=int, default=DEFAULT_K)
    p.add_argument("--panel-seed", type=int, default=0,
                   help="an independent replicate of the panel (bench/label_free_panel.py)")
    p.add_argument("--out", default=None, help="also write the JSON report here")
    args = p.parse_args()
    torch.set_num_threads(1)
    results = {"min_gap": MIN_GAP, "k": args.k, "augmentation": DEFAULT_AUGMENTATION,
               "panel_seed": args.panel_seed,
               "collections": {c: study(c, args.k, args.panel_seed) for c in args.collections}}
    # The gate's margin: three standard deviations of the difference of two scores, each
    # with the largest noise seen (view seeds or resamples) on any collection.
    default = [res["candidates"]["score"][DEFAULT_AUGMENTATION]
               for res in results["collections"].values()]
    sd = max(max(r["view_seed_std"] or 0.0, r["resample_std"]) for r in default)
    margin = 3 * float(np.sqrt(2)) * sd
    results["noise_std"] = sd
    results["recommended_margin"] = margin
    for res in results["collections"].values():
        knn = list(res["knn_top1"].values())
        scores = [res["candidates"]["score"][DEFAULT_AUGMENTATION]["scores"][n]
                  for n in res["knn_top1"]]
        precision, pairs = gate_precision(knn, scores, margin)
        res["gate_precision"] = {"share": precision, "pairs": pairs}
    results["summary"] = summary(results)
    report("label_free", results, args.out)
    _table(results)
    _print_summary(results)
    print(f"\nnoise std {sd:.4f}; recommended margin {margin:.4f}")
    for coll, res in results["collections"].items():
        g = res["gate_precision"]
        print(f"{coll}: pairs scored more than the margin apart: {g['pairs']}, the higher "
              f"one not worse by > {100 * MIN_GAP:.0f} kNN points in {100 * g['share']:.1f} %")


if __name__ == "__main__":
    main()

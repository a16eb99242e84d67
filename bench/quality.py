"""Quality at equal budgets: AND vs Instance discrimination (rounds=1) vs raw pixels, by
weighted-kNN top-1 on a labelled test split (CIFAR-10 from ../shared/data by default).

    python -m bench.quality --data /path/to/cifar10 --budgets 25 50 [--set key=value ...]

A budget is the total number of epochs: AND spends it as 5 rounds of budget/5 epochs, Instance
as one round of `budget` epochs. Final-epoch figures on recomputed features; nothing is
selected on the test split.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from bench.common import CIFAR_ZIP, report
from trainer.augment import normalise
from trainer.config import TrainConfig
from trainer.data import open_collection
from trainer.engine import Trainer
from trainer.evaluation import knn_evaluation
from trainer.loader import prepare


def raw_pixels(collection, k: int, sigma: float) -> float:
    """kNN on the images themselves: standardised pixels, cosine similarity."""
    prepared = prepare(collection, 32)
    c = prepared.collection
    assert prepared.images is not None
    x = torch.nn.functional.normalize(
        normalise(prepared.images, prepared.mean, prepared.std).flatten(1), dim=1).numpy()
    return knn_evaluation(x, c.labels, c.is_eval, len(c.classes), k, sigma)["knn_top1"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(CIFAR_ZIP))
    p.add_argument("--budgets", type=int, nargs="+", default=[25, 50])
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                   metavar="KEY=VALUE")
    p.add_argument("--methods", nargs="+", default=["AND", "Instance"],
                   choices=["AND", "Instance"])
    p.add_argument("--precisions", nargs="+", default=["auto"], choices=["auto", "bf16", "fp32"],
                   help="run each method in each precision (bf16 vs fp32 accuracy check)")
    p.add_argument("--train-items", type=int, default=None,
                   help="train on N training images drawn at random (seed 0; items are "
                   "sorted by class, so the first N would hold few classes); test split "
                   "unchanged")
    p.add_argument("--out", default=None, help="also write the JSON report here")
    args = p.parse_args()
    base = TrainConfig.from_strings(["backbone=small_cnn", *args.overrides])
    results = {"data": args.data, "backbone": base.backbone, "train_items": args.train_items,
               "runs": []}

    def dataset():
        collection = open_collection(args.data)
        if args.train_items:
            train = np.random.default_rng(0).permutation(collection.train_indices)
            keep = np.concatenate([train[:args.train_items], collection.eval_indices])
            collection = collection.subset(np.sort(keep))
        return collection

    results["raw_pixels_knn_top1"] = raw_pixels(dataset(), base.knn_k, base.knn_sigma)
    print(f"raw pixels: {results['raw_pixels_knn_top1']:.4f}", flush=True)
    runs = [(b, m, p) for b in args.budgets for m in args.methods for p in args.precisions]
    for budget, method, precision in runs:
        rounds = 5 if method == "AND" else 1
        config = base.replace(rounds=rounds, epochs_per_round=budget // rounds,
                              precision=precision)
        t0 = time.time()
        history: list[dict] = []
        with tempfile.TemporaryDirectory() as out:
            result = Trainer(config, dataset(), out, on_epoch=history.append).run()
        per_round = [(r["round"], r["knn_top1"], r["neighbourhood_quality"])
                     for r in history if r["knn_top1"] is not None]
        run = {"method": method, "precision": result.metrics["precision"],
               "budget_epochs": budget, "rounds": rounds, "epochs_per_round": budget // rounds,
               "knn_top1": result.metrics["knn_top1"], "knn_top5": result.metrics["knn_top5"],
               "per_round": per_round, "wall_s": round(time.time() - t0, 1),
               "images_per_s": result.metrics["images_per_s"]}
        results["runs"].append(run)
        print(f"{method:9s} {run['precision']} budget {budget:3d}: kNN top-1 "
              f"{run['knn_top1']:.4f} ({run['wall_s']:.0f}s) per round {per_round}", flush=True)
    report("quality", results, args.out)


if __name__ == "__main__":
    main()

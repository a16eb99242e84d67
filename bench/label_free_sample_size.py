"""How the label-free score of one encoder moves with the size of the sample it is measured on.

    python -m bench.label_free_sample_size --run RUN --data DIR [--sizes 250 500 1000]

The score ranks each view's own image among the N items of the sample, so the same encoder
on more items of the same collection finds its images further down and scores lower: a score
measured on a collection of 1,000 items does not compare with one measured after it has grown
to 2,000. This is why the promotion gate measures the current model again on the new run's
items (trainer/label_free_reference.py). Prints the mean and spread of the run's model and of
raw pixels over `--repeats` random samples of each size (the whole collection last), and of
their difference beside the gate's margin for it on each sample (trainer/judge.label_free_margin:
the fixed margin, or 2 standard errors of the item-by-item differences where more), so the
margin can be checked against the spread of the difference from one sample to the next.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bench.common import report
from trainer.baseline import pixel_vectors
from trainer.data import open_collection
from trainer.encoder_file import EmbeddingModel
from trainer.judge import label_free_margin
from trainer.label_free_baselines import sample_score, sample_views


def measure(run: Path, data: Path, sizes: list[int], repeats: int) -> dict:
    collection = open_collection(data)
    precision = json.loads((run / "metrics.json").read_text()).get("precision", "auto")
    model = EmbeddingModel.load(run / "encoder.pt", precision=precision)
    side = model.meta.image_size
    images = torch.stack([torch.from_numpy(collection.load(i, side)).permute(2, 0, 1)
                          for i in range(len(collection))])
    mean = images.float().mean((0, 2, 3)) / 255
    std = images.float().std((0, 2, 3)) / 255
    encoders = {"model": model.embed_uint8,
                "pixels": lambda batch: pixel_vectors(batch, mean, std)}
    rng = np.random.default_rng(0)
    out = {}
    for n in [s for s in sizes if s < len(collection)] + [len(collection)]:
        scores: dict[str, list[float]] = {name: [] for name in encoders}
        scores |= {"difference": [], "margin": []}
        for _ in range(repeats if n < len(collection) else 1):
            rows = torch.from_numpy(np.sort(rng.choice(len(collection), n, replace=False)))
            sample = images[rows]
            views = sample_views(sample)
            measured = {name: sample_score(forward, sample, views, every_part=False)
                        for name, forward in encoders.items()}
            for name, score in measured.items():
                scores[name].append(score.score)
            scores["difference"].append(measured["model"].score - measured["pixels"].score)
            scores["margin"].append(label_free_margin(measured["model"].per_item,
                                                      measured["pixels"].per_item))
        out[str(n)] = {name: {"mean": float(np.mean(v)), "sd": float(np.std(v))}
                       for name, v in scores.items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a finished run's folder")
    p.add_argument("--data", required=True, help="its collection")
    p.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out")
    args = p.parse_args()
    report("label_free_sample_size", measure(Path(args.run), Path(args.data), args.sizes,
                                             args.repeats), args.out)


if __name__ == "__main__":
    main()

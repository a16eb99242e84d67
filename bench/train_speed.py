"""End-to-end training speed through the real trainer (data, augmentation, model, bank), per
backbone, at batch 128, with the share of time in each part.

    python -m bench.train_speed --data /path/to/cifar10 [--steps 30] [--backbones ...]

Each backbone runs round 0 and round 1 (so anchor discovery on the full bank is timed too),
`--steps` batches per round, on the full training set (the bank has one row per image).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import report
from trainer.config import TrainConfig
from trainer.data import open_collection
from trainer.engine import Trainer

REFERENCE_IMAGES_PER_S = 55.0  # the AND reference code, ResNet-18, batch 128, this machine


def run(data: str, backbone: str, steps: int, items: int | None,
        overrides: list[str]) -> dict:
    collection = open_collection(data)
    if items:
        collection = collection.subset(collection.train_indices[:items])
    config = TrainConfig.from_strings(
        [f"backbone={backbone}", "rounds=2", "epochs_per_round=1", "batch_size=128",
         "eval_each_round=false", *overrides])
    records: list[dict] = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as out:
        result = Trainer(config, collection, out, on_epoch=records.append, profile=True,
                         max_steps=steps).run()
    wall = time.time() - t0
    seen = steps * 128 * len(records)
    data_s = sum(r["time_data_s"] for r in records)
    backbone_s = sum(r["time_backbone_s"] for r in records)
    bank_s = sum(r["time_bank_s"] for r in records)
    discovery_s = sum(r["time_discovery_s"] for r in records)
    train_s = data_s + backbone_s + bank_s
    total = train_s + discovery_s
    return {
        "backbone": backbone, "image_size": config.input_size,
        "bank_rows": int((~collection.is_eval).sum()), "steps": seen // 128,
        "images_per_s": round(seen / train_s, 1),
        "x_reference": round(seen / train_s / REFERENCE_IMAGES_PER_S, 2)
        if backbone == "resnet18_cifar" else None,
        "share": {"data": round(data_s / total, 3), "backbone": round(backbone_s / total, 3),
                  "bank": round(bank_s / total, 3), "discovery": round(discovery_s / total, 3)},
        "discovery_s_per_round": round(discovery_s, 2),
        "precision": result.metrics["precision"], "device": result.metrics["device"],
        "wall_s_including_decoding": round(wall, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"
                                         / "cifar10-jpeg.zip"))
    p.add_argument("--steps", type=int, default=30, help="batches per round")
    p.add_argument("--backbones", nargs="+",
                   default=["small_cnn", "resnet18_cifar", "resnet18"])
    p.add_argument("--items-224", type=int, default=4000,
                   help="training images for the 224x224 backbone (decoding 50k at 224 "
                   "takes long on a small machine)")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                   metavar="KEY=VALUE")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    results = []
    for backbone in args.backbones:
        items = args.items_224 if backbone == "resnet18" else None
        steps = min(args.steps, 10) if backbone == "resnet18" else args.steps
        r = run(args.data, backbone, steps, items, args.overrides)
        print(r, flush=True)
        results.append(r)
    report("train_speed", results, args.out)


if __name__ == "__main__":
    main()

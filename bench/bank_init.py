"""How the memory bank starts, and what a short run learns from it: the same runs with the bank
filled from the starting network's embeddings (`bank_init=embeddings`) and from the
reference's random vectors (`bank_init=random`, the default, AND_SPEC §2), on scikit-learn's digits
and the demo's photo patches, each seeded alike. Prints the weighted-kNN top-1 of both beside
raw pixels' and the untrained network's, and the label-free score of both.

    python -m bench.bank_init [--seeds 0 1 2] [--collections digits photo-patches]
                              [--folder NAME=DIR ...] [--schedule digits=2x3 NAME=RxE ...]
                              [--out FILE]

`--folder` adds a labelled image folder (train/ and test/ splits of class folders, e.g. a
CIFAR-10 slice), trained 2 x 3 unless `--schedule` says otherwise.

A schedule is ROUNDS x EPOCHS (small CNN, batch 128, the rest the config's defaults; the
digits at 2 x 3 are the suite's learning check, tests/trainer/test_engine.py).
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
from trainer.sample_data import write_digits, write_photo_patches

WRITERS = {"digits": write_digits, "photo-patches": write_photo_patches}
SCHEDULES = {"digits": "2x3", "photo-patches": "2x5"}
INITS = ("random", "embeddings")


def _config(seed: int, rounds: int = 1, epochs: int = 1, **more: str) -> TrainConfig:
    return TrainConfig.from_dict({"backbone": "small_cnn", "rounds": rounds,
                                  "epochs_per_round": epochs, "batch_size": 128, "knn_k": 20,
                                  "num_workers": 0, "seed": seed, **more})


def one_run(data: Path, bank_init: str, seed: int, schedule: str, out: Path) -> dict:
    rounds, epochs = (int(x) for x in schedule.split("x"))
    config = _config(seed, rounds, epochs, bank_init=bank_init)
    t0 = time.time()
    m = Trainer(config, open_collection(data), out).run().metrics
    return {"knn_top1": m["knn_top1"], "pixel_knn_top1": m.get("pixel_knn_top1"),
            "label_free": m.get("label_free"), "pixel_label_free": m.get("pixel_label_free"),
            "untrained_label_free": m.get("untrained_label_free"),
            "wall_s": round(time.time() - t0, 1)}


def untrained_knn(data: Path, seed: int, out: Path) -> float:
    """The same network (same seed, same split) with every epoch cut to no step."""
    return float(Trainer(_config(seed), open_collection(data), out, max_steps=0).run()
                 .metrics["knn_top1"])


def measure(collections: list[str], folders: dict[str, Path], seeds: list[int],
            schedules: dict[str, str]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [*collections, *folders]:
            data = folders[name] if name in folders else WRITERS[name](Path(tmp) / name)
            for seed in seeds:
                row = {"collection": name, "seed": seed, "schedule": schedules.get(name, "2x3"),
                       "untrained_knn_top1": untrained_knn(data, seed,
                                                           Path(tmp) / f"{name}-{seed}-0")}
                for init in INITS:
                    row[init] = one_run(data, init, seed, row["schedule"],
                                        Path(tmp) / f"{name}-{seed}-{init}")
                print(row, flush=True)
                rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--collections", nargs="*", choices=sorted(WRITERS),
                   default=["digits", "photo-patches"])
    p.add_argument("--folder", nargs="*", default=[], metavar="NAME=DIR")
    p.add_argument("--schedule", nargs="*", default=[], metavar="NAME=RxE")
    p.add_argument("--out")
    args = p.parse_args()
    folders = {name: Path(d) for name, d in (f.split("=", 1) for f in args.folder)}
    schedules = SCHEDULES | dict(s.split("=", 1) for s in args.schedule)
    report("bank_init", measure(args.collections, folders, args.seeds, schedules), args.out)


if __name__ == "__main__":
    main()

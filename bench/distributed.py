"""Scaling of one training job over several processes (trainer.launcher).

CPU (always): 2 Gloo processes x 1 thread against 1 process x 2 threads, the same global
batch, small CNN on scikit-learn's digits. On a 2-core machine no gain is expected: the
same cores do the same arithmetic, plus the gradient all-reduce and the feature gather.

GPU (when CUDA is present): images/s of the CIFAR ResNet-18 on 1 GPU and on all of them,
scaling efficiency (images/s on k GPUs / (k x images/s on 1)) and the epoch time of a
50,000-image CIFAR-10 epoch at that speed.

Quality (--quality): the same small AND run (small CNN, 2 rounds x 2 epochs, global batch 64)
on 1 process, on 2 processes with batch norm over the global batch (sync_bn=true, the
default) and on 2 processes with batch norm over each process's half (sync_bn=false), under
several seeds, on a greyscale CIFAR-10 slice and on scikit-learn's digits (the collections of
bench/label_free_panel.py): final kNN top-1 per seed and mode, mean +- std over the seeds.
Runs go seed by seed (every mode and collection of a seed before the next seed), and the
results file is rewritten after every run, so a run cut short still holds whole seeds.

    python -m bench.distributed [--data CIFAR_ZIP_OR_FOLDER] [--steps 40] [--out FILE]
    OMP_NUM_THREADS=1 python -m bench.distributed --quality [--seeds 8] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import CIFAR_ZIP, machine, report
from bench.label_free_panel import BASE as PANEL_BASE
from bench.label_free_panel import collection_dir
from trainer.config import TrainConfig
from trainer.data import open_collection
from trainer.evaluation import headline
from trainer.launcher import run_training
from trainer.sample_data import write_digits


def _run(config: dict[str, Any], data: str, max_steps: int | None = None) -> dict[str, Any]:
    cfg = TrainConfig.from_dict(config)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = run_training(cfg, open_collection(data), out, max_steps=max_steps)
        wall = time.perf_counter() - t0
    speeds = [r["images_per_s"] for r in result.history]
    return {"processes": cfg.world_size, "batch_size": cfg.batch_size,
            "images_per_s": round(statistics.median(speeds), 1),
            "images_per_s_per_epoch": [round(s, 1) for s in speeds],
            "wall_s": round(wall, 1)}


def cpu_part(epochs: int) -> dict[str, Any]:
    base = {"backbone": "small_cnn", "rounds": 1, "epochs_per_round": epochs,
            "batch_size": 128, "precision": "fp32", "num_workers": 0, "device": "cpu",
            "eval_each_round": False, "seed": 0}
    with tempfile.TemporaryDirectory() as tmp:
        data = str(write_digits(Path(tmp) / "digits"))
        two = _run(base | {"gpus": 2}, data) | {"threads_per_process": 1}
        previous = torch.get_num_threads()
        try:
            torch.set_num_threads(2)
            one = _run(base | {"gpus": 1}, data) | {"threads_per_process": 2}
            # One thread alone: tells the cost of two threads on busy cores from the rest.
            torch.set_num_threads(1)
            single = _run(base | {"gpus": 1}, data) | {"threads_per_process": 1}
        finally:
            torch.set_num_threads(previous)
    return {"data": "scikit-learn digits, 1,434 training images, 12 steps per epoch",
            "two_processes_1_thread": two, "one_process_2_threads": one,
            "one_process_1_thread": single,
            "speedup": round(two["images_per_s"] / one["images_per_s"], 2)}


def gpu_part(data: str, steps: int) -> dict[str, Any]:
    gpus = torch.cuda.device_count()
    base = {"backbone": "resnet18_cifar", "rounds": 1, "epochs_per_round": 2,
            "batch_size": 128 * gpus, "eval_each_round": False, "seed": 0}
    runs = {}
    for k in sorted({1, gpus}):
        # The same global batch for 1 and k GPUs: k x 128 (128 per GPU at k GPUs).
        runs[k] = _run(base | {"gpus": k}, data, max_steps=steps)
    one = runs[1]["images_per_s"]
    out: dict[str, Any] = {"gpus": gpus, "device": torch.cuda.get_device_name(0),
                           "runs": list(runs.values())}
    if gpus > 1:
        out["scaling_efficiency"] = round(runs[gpus]["images_per_s"] / (gpus * one), 3)
    out["cifar10_epoch_s"] = {str(k): round(50_000 / r["images_per_s"], 1)
                              for k, r in runs.items()}
    return out


# The label-free panel's small-collection settings (batch 64, lr 0.06), AND proper: round 0 is
# instance discrimination, round 1 trains on the anchors rank 0 discovered and broadcast.
QUALITY_CONFIG = [*PANEL_BASE, "rounds=2", "epochs_per_round=2"]
MODES = {"1p": ["gpus=1"], "2p": ["gpus=2", "sync_bn=true"],
         "2p_no_sync": ["gpus=2", "sync_bn=false"]}


def _quality_run(overrides: list[str], data: str) -> dict[str, Any]:
    cfg = TrainConfig.from_strings(overrides)
    previous = torch.get_num_threads()
    # One thread in every process (the launcher gives each rank cores / processes = 1 here):
    # the 1-process run must not get twice the cores of each of the two.
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            result = run_training(cfg, open_collection(data), out)
            wall = time.perf_counter() - t0
    finally:
        torch.set_num_threads(previous)
    top1, _ = headline(result.metrics)
    assert top1 is not None, "the collection has no labelled test split"
    return {"knn_top1": round(top1, 4), "wall_s": round(wall, 1),
            "final_loss": round(result.history[-1]["loss"], 4)}


def _spread(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (n - 1) over seeds."""
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else None,
            "n": len(values)}


def quality_summary(per_seed: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """Per collection: each mode's mean +- std, and each 2-process mode's paired difference to
    the 1-process run of the same seed (same initial weights, same epoch orders and crops)."""
    out: dict[str, Any] = {}
    for name, modes in per_seed.items():
        n = min(len(v) for v in modes.values())
        if n == 0:
            continue
        entry: dict[str, Any] = {m: _spread(v[:n]) for m, v in modes.items()}
        for m in ("2p", "2p_no_sync"):
            diffs = [b - a for a, b in zip(modes["1p"][:n], modes[m][:n], strict=True)]
            entry[f"{m}_minus_1p"] = _spread(diffs)
        out[name] = entry
    return out


def _print_quality(summary: dict[str, Any]) -> None:
    for name, entry in summary.items():
        cells = []
        for m in MODES:
            sd = entry[m]["std"]
            cells.append(f"{m} {entry[m]['mean']:.3f}" + ("" if sd is None else f"+-{sd:.3f}"))
        print(f"{name} (n={entry['1p']['n']}): " + " / ".join(cells), flush=True)


def quality_part(collections: list[str], seeds: list[int], out: str | None) -> dict[str, Any]:
    dirs = {name: str(collection_dir(name)) for name in collections}
    runs: list[dict[str, Any]] = []
    per_seed: dict[str, dict[str, list[float]]] = {c: {m: [] for m in MODES} for c in dirs}
    results: dict[str, Any] = {}
    load_start = os.getloadavg()
    for seed in seeds:
        for name, data in dirs.items():
            for mode, overrides in MODES.items():
                run = _quality_run([*QUALITY_CONFIG, f"seed={seed}", *overrides], data)
                run |= {"collection": name, "mode": mode, "seed": seed}
                runs.append(run)
                per_seed[name][mode].append(run["knn_top1"])
                print(run, flush=True)
                results = {
                    "config": QUALITY_CONFIG, "modes": MODES,
                    "threads_per_process": 1,
                    "collections": {c: _describe(d) for c, d in dirs.items()},
                    "seeds_done": sorted({r["seed"] for r in runs}),
                    "load_average_at_start": [round(x, 2) for x in load_start],
                    "load_average_now": [round(x, 2) for x in os.getloadavg()],
                    "per_seed_knn_top1": per_seed, "summary": quality_summary(per_seed),
                    "runs": runs}
                if out:
                    _write(results, out)
        _print_quality(quality_summary(per_seed))
    report("distributed_quality", results, out)
    return results


def _describe(folder: str) -> dict[str, int]:
    coll = open_collection(folder)
    return {"items": len(coll), "test_items": int(coll.is_eval.sum()),
            "classes": len(coll.classes)}


def _write(results: dict[str, Any], out: str) -> None:
    payload = {"benchmark": "distributed_quality", "machine": machine(), "results": results}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(payload, indent=2) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(CIFAR_ZIP), help="CIFAR-10 for the GPU part")
    p.add_argument("--steps", type=int, default=40, help="steps per epoch in the GPU part")
    p.add_argument("--epochs", type=int, default=3, help="epochs in the CPU part")
    p.add_argument("--out", default=None)
    p.add_argument("--quality", action="store_true",
                   help="kNN top-1 of 1 process vs 2 (sync_bn true and false) over seeds")
    p.add_argument("--seeds", type=int, default=8, help="quality: seeds 0..N-1")
    p.add_argument("--collections", nargs="+", default=["cifar10-grey", "digits"],
                   help="quality: collections of bench/label_free_panel.py")
    args = p.parse_args()
    if args.quality:
        quality_part(args.collections, list(range(args.seeds)), args.out)
        return
    results: dict[str, Any] = {"cpu": cpu_part(args.epochs)}
    print(results["cpu"], flush=True)
    if torch.cuda.is_available():
        results["gpu"] = gpu_part(args.data, args.steps)
    report("distributed", results, args.out)


if __name__ == "__main__":
    main()

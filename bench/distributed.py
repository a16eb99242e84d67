"""Scaling of one training job over several processes (trainer.launcher).

CPU (always): 2 Gloo processes x 1 thread against 1 process x 2 threads, the same global
batch, small CNN on scikit-learn's digits. On a 2-core machine no gain is expected: the
same cores do the same arithmetic, plus the gradient all-reduce and the feature gather.

GPU (when CUDA is present): images/s of the CIFAR ResNet-18 on 1 GPU and on all of them,
scaling efficiency (images/s on k GPUs / (k x images/s on 1)) and the epoch time of a
50,000-image CIFAR-10 epoch at that speed.

    python -m bench.distributed [--data CIFAR_ZIP_OR_FOLDER] [--steps 40] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import report
from trainer.config import TrainConfig
from trainer.data import open_collection
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"
                                         / "cifar10-jpeg.zip"), help="CIFAR-10 for the GPU part")
    p.add_argument("--steps", type=int, default=40, help="steps per epoch in the GPU part")
    p.add_argument("--epochs", type=int, default=3, help="epochs in the CPU part")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    results: dict[str, Any] = {"cpu": cpu_part(args.epochs)}
    print(results["cpu"], flush=True)
    if torch.cuda.is_available():
        results["gpu"] = gpu_part(args.data, args.steps)
    report("distributed", results, args.out)


if __name__ == "__main__":
    main()

"""CPU inference speed of the encoder's ONNX export under onnxruntime against the torch forward
the service runs (`EmbeddingModel.embed_uint8` on the inference graph: batch norm folded, bf16
where the machine has it, channels_last, a frozen TorchScript graph on the CPU), per backbone
and batch size, on one thread each, as each of the service's inference threads runs
(service/batcher.py).

    python -m bench.onnx_speed [--backbones small_cnn resnet18_cifar] [--batches 1 16 64]
                               [--repeats 5] [--seconds 2] [--model DIR] [--out FILE]

Untrained encoders (speed does not depend on the weights) unless --model names a run folder or
bundle. The two engines take turns, `--repeats` times, each turn running for `--seconds`; the
median turn is reported, with the spread, so a machine shared with other work shows as a wide
spread rather than as a difference between the engines. The load average is recorded before
and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from bench.common import report
from trainer.backbones import Encoder
from trainer.encoder_file import EmbeddingModel, EncoderMeta, save_encoder
from trainer.export import export

SIZES = {"small_cnn": 32, "resnet18_cifar": 32, "resnet18": 224}


def _images_per_s(run: Callable[[], Any], batch: int, seconds: float) -> float:
    run()  # warm-up: first-call allocations and kernel choices
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or n == 0:
        run()
        n += 1
    return n * batch / elapsed


def _models(folder: Path) -> tuple[EmbeddingModel, ort.InferenceSession]:
    model = EmbeddingModel.load(folder / "encoder.pt", device="cpu", serving=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(export(folder, folder / "onnx")), options,
                                   providers=["CPUExecutionProvider"])
    return model, session


def measure(folder: Path, batches: list[int], repeats: int, seconds: float) -> dict[str, Any]:
    model, session = _models(folder)
    size = model.meta.image_size
    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        pixels = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        tensor = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
        check = (model.embed_uint8(tensor) * session.run(None, {"images": pixels})[0]).sum(1)
        turns: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
        for _ in range(repeats):
            turns["torch"].append(_images_per_s(lambda t=tensor: model.embed_uint8(t),
                                                batch, seconds))
            turns["onnxruntime"].append(_images_per_s(
                lambda p=pixels: session.run(None, {"images": p}), batch, seconds))
        med = {k: statistics.median(v) for k, v in turns.items()}
        rows.append({
            "batch": batch,
            "torch_images_per_s": round(med["torch"], 1),
            "onnxruntime_images_per_s": round(med["onnxruntime"], 1),
            "speedup": round(med["onnxruntime"] / med["torch"], 3),
            "torch_range": [round(min(turns["torch"]), 1), round(max(turns["torch"]), 1)],
            "onnxruntime_range": [round(min(turns["onnxruntime"]), 1),
                                  round(max(turns["onnxruntime"]), 1)],
            "min_cosine": round(float(check.min()), 7),
        })
        print(rows[-1], flush=True)
    return {"backbone": model.meta.backbone, "image_size": size, "dim": model.meta.dim,
            "torch_bf16": model.runtime.bf16, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", nargs="+", default=["small_cnn", "resnet18_cifar"],
                   choices=sorted(SIZES))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--model", default=None, help="a run folder or bundle instead")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)  # one inference thread's share, as the service runs it
    torch.set_grad_enabled(False)
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            results.append(measure(Path(args.model), args.batches, args.repeats, args.seconds))
        for backbone in [] if args.model else args.backbones:
            folder = Path(tmp) / backbone
            folder.mkdir()
            torch.manual_seed(0)
            save_encoder(folder / "encoder.pt", Encoder(backbone, 128),
                         EncoderMeta(backbone, 128, SIZES[backbone], (0.5, 0.5, 0.5),
                                     (0.25, 0.25, 0.25)))
            results.append(measure(folder, args.batches, args.repeats, args.seconds))
    report("onnx_speed", {"threads": 1, "onnxruntime": ort.__version__,
                          "load_average_before": [round(x, 2) for x in load_before],
                          "load_average_after": [round(x, 2) for x in os.getloadavg()],
                          "models": results}, args.out)


if __name__ == "__main__":
    main()

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

from bench.common import CIFAR_ZIP, report
from trainer.config import TrainConfig
from trainer.data import open_collection
from trainer.engine import Trainer

REFERENCE_IMAGES_PER_S = 55.0  # the AND reference code, ResNet-18, batch 128, this machine


def run(data: str, backbone: str, steps: int, items: int | None,
        overrides: list[str]) -> dict:
    collection = open_collection(data)
    if items:
        collection = collection.subset(collection.train_indices[:items])
    # A real run (thousands of steps) compiles the model; so does the benchmark.
    config = TrainConfig.from_strings(
        [f"backbone={backbone}", "rounds=2", "epochs_per_round=1", "batch_size=128",
         "eval_each_round=false", "compile=always", *overrides])
    records: list[dict] = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as out:
        result = Trainer(config, collection, out, on_epoch=records.append, profile=True,
                         max_steps=steps).run()
    wall = time.time() - t0
    # Round 0 is the warm-up (compilation, kernel caches); round 1 is the steady state, and
    # starts with the anchor discovery over the whole bank.
    steady = records[-1]
    seen = steps * 128
    data_s, backbone_s, bank_s = (steady["time_data_s"], steady["time_backbone_s"],
                                  steady["time_bank_s"])
    discovery_s = steady["time_discovery_s"]
    train_s = data_s + backbone_s + bank_s
    speed = seen / train_s
    # Discovery runs once per round: at the reference schedule it is spread over 200 epochs.
    epoch_s = config_epoch_images(collection) / speed
    return {
        "backbone": backbone, "image_size": config.input_size,
        "bank_rows": int((~collection.is_eval).sum()), "steps_timed": steps,
        "compiled": config.compile != "never",
        "images_per_s": round(speed, 1),
        "share_of_step": {"data": round(data_s / train_s, 3),
                          "backbone": round(backbone_s / train_s, 3),
                          "bank": round(bank_s / train_s, 3)},
        "discovery_s_per_round": round(discovery_s, 2),
        "discovery_share_at_200_epochs_per_round": round(
            discovery_s / (discovery_s + 200 * epoch_s), 4),
        "precision": result.metrics["precision"], "device": result.metrics["device"],
        "wall_s_including_decoding": round(wall, 1),
    }


def config_epoch_images(collection) -> int:
    return int((~collection.is_eval).sum())


def reference_proxy(steps: int = 6, bank_rows: int = 50_000) -> float:
    """The reference's full step, re-created and timed now on this machine: ResNet-18 in fp32
    (NCHW), autograd softmax over a 50k bank, momentum update, SGD; random batches (no data
    loading, so the proxy is if anything faster than the reference code)."""
    import torch

    from trainer.backbones import Encoder
    from trainer.bank import MemoryBank
    from trainer.loss import and_loss_reference

    torch.manual_seed(0)
    model = Encoder("resnet18_cifar", 128)
    bank = MemoryBank(bank_rows, 128)
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    x = torch.randn(128, 3, 32, 32)
    index = torch.randperm(bank_rows)[:128]
    positives = torch.stack([index, torch.full_like(index, -1)], 1)

    def step() -> None:
        f = model(x)
        loss = and_loss_reference(f, bank.vectors, positives, 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        bank.update(index, f.detach())

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return 128 * steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(CIFAR_ZIP))
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
    results: dict = {"runs": []}
    if "resnet18_cifar" in args.backbones:
        proxy = reference_proxy()
        results["reference_proxy_images_per_s"] = round(proxy, 1)
        results["reference_measured_images_per_s"] = REFERENCE_IMAGES_PER_S
        print(f"reference-style step now: {proxy:.1f} img/s", flush=True)
    for backbone in args.backbones:
        items = args.items_224 if backbone == "resnet18" else None
        steps = min(args.steps, 10) if backbone == "resnet18" else args.steps
        r = run(args.data, backbone, steps, items, args.overrides)
        if backbone == "resnet18_cifar" and "reference_proxy_images_per_s" in results:
            r["x_reference_proxy_now"] = round(r["images_per_s"] / proxy, 2)
            r["x_reference_55"] = round(r["images_per_s"] / REFERENCE_IMAGES_PER_S, 2)
        print(r, flush=True)
        results["runs"].append(r)
    report("train_speed", results, args.out)


if __name__ == "__main__":
    main()

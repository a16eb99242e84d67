"""Progress as data: one record per epoch, appended as a JSON line, drawn as curves at the end."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class EpochRecord:
    round: int  # 0 = instance discrimination, 1.. = AND rounds
    rounds: int
    epoch: int  # 1-based within the round
    epochs: int  # per round
    loss: float
    lr: float
    anchors: int  # anchors selected in this round
    anchor_share: float
    neighbourhood_quality: float | None  # share of same-class anchor-neighbour pairs
    images_per_s: float
    elapsed_s: float  # training time so far, resumptions included
    eta_s: float
    time_data_s: float  # this epoch: reading + augmentation
    time_backbone_s: float  # forward + backward + optimiser step of the network
    time_bank_s: float  # logits, loss, gradient to the features, bank update
    time_discovery_s: float  # entropy + neighbour search at the start of the round
    knn_top1: float | None = None
    knn_top5: float | None = None
    knn_protocol: str | None = None
    # The label-free score (trainer.label_free_progress) on the run's sample of
    # `label_free_items` items: the model's at evaluation epochs, the baselines every epoch.
    label_free: float | None = None
    pixel_label_free: float | None = None
    untrained_label_free: float | None = None
    pretrained_label_free: float | None = None  # runs from init_from=imagenet
    label_free_items: int | None = None
    label_free_measure: str | None = None  # trainer.label_free.MEASURE when it was measured

    @property
    def global_epoch(self) -> int:
        return self.round * self.epochs + self.epoch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"global_epoch": self.global_epoch}


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def plot_curves(records: Sequence[dict[str, Any]], path: str | os.PathLike[str],
                title: str = "AND training") -> None:
    """Loss, lr, neighbourhood quality and kNN accuracy against epochs; round starts marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["global_epoch"] for r in records]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = [
        ("loss", "loss", axes[0][0]),
        ("lr", "learning rate", axes[0][1]),
        ("neighbourhood_quality", "neighbourhood quality", axes[1][0]),
        ("knn_top1", "weighted kNN top-1", axes[1][1]),
    ]
    for key, label, ax in panels:
        pts = [(xi, r[key]) for xi, r in zip(x, records, strict=True) if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o" if len(pts) < 30 else None, ms=3)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        for r in records:
            if r["epoch"] == 1 and r["round"] > 0:
                ax.axvline(r["global_epoch"] - 0.5, color="grey", lw=0.6, ls="--")
    axes[0][1].set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

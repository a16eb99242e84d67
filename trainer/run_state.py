"""Everything a training run's next step depends on, as one object, and its checkpoint file.

A checkpoint after every epoch (and at most every `checkpoint_interval_s` mid-epoch, and when
asked to stop) holds weights, optimiser, bank, round, epoch, step, the epoch's sample order,
anchors, neighbourhoods, the RNG state, the config and the history. Running again on the same
output folder continues from it, bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer import checkpoint
from trainer.bank import MemoryBank
from trainer.config import TrainConfig
from trainer.discovery import Neighbourhoods, no_neighbourhoods, positive_table
from trainer.errors import TrainerError

CHECKPOINT = "checkpoint.pt"
FORMAT = 1


@dataclass
class EpochAccumulator:
    """Sums over the steps of the current epoch (saved mid-epoch with the rest)."""

    loss_sum: float = 0.0
    seen: int = 0
    data_s: float = 0.0
    backbone_s: float = 0.0
    bank_s: float = 0.0


@dataclass
class RunState:
    config: TrainConfig
    fingerprint: str  # of the training images' ids: a resumption must train on the same ones
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    bank: MemoryBank
    gen: torch.Generator  # every random choice of the run after the weights' initialisation
    mean: torch.Tensor  # the channel statistics training normalises with
    std: torch.Tensor
    hoods: Neighbourhoods | None  # None: this round's discovery is still to come
    round: int = 0
    epoch: int = 0
    step: int = 0
    order: np.ndarray | None = None  # this epoch's sample order, drawn at its first step
    discovery_s: float = 0.0
    acc: EpochAccumulator = field(default_factory=EpochAccumulator)
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0  # training time of the earlier sessions
    started: float = field(default_factory=time.monotonic)  # this session's start; not saved

    @property
    def training_time(self) -> float:
        """Seconds of training so far, resumptions included."""
        return self.elapsed + time.monotonic() - self.started

    def to_dict(self) -> dict[str, Any]:
        h = self.hoods
        return {
            "format": FORMAT,
            "config": self.config.to_dict(),
            "fingerprint": self.fingerprint,
            "round": self.round, "epoch": self.epoch, "step": self.step,
            "order": self.order,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "bank": self.bank.vectors.cpu(),
            "hoods": None if h is None else {
                "anchors": h.anchors.cpu(), "neighbours": h.neighbours.cpu(),
                "quality": h.quality, "entropy_mean": h.entropy_mean,
            },
            "discovery_s": self.discovery_s,
            "rng": self.gen.get_state(),
            "accumulator": self.acc.__dict__.copy(),
            "history": self.history,
            "elapsed": self.training_time,
            "mean": self.mean, "std": self.std,
        }

    def restore(self, state: dict[str, Any], where: Path) -> None:
        """Continue from a checkpoint of the same run (config and images), or refuse."""
        saved = TrainConfig.from_dict(state["config"])
        theirs, ours = saved.training_identity(), self.config.training_identity()
        changed = sorted(k for k in ours if theirs.get(k) != ours[k])
        if changed:
            raise TrainerError(
                f"{where} holds a run with a different config ({', '.join(changed)} "
                "differ); use a new output folder or the same settings"
            )
        if state["fingerprint"] != self.fingerprint:
            raise TrainerError(
                f"{where} holds a run on a different set of images; use a new output folder"
            )
        dev = self.bank.vectors.device
        self.round, self.epoch, self.step = state["round"], state["epoch"], state["step"]
        self.order = state["order"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.bank.vectors.copy_(state["bank"].to(dev))
        self.hoods = _hoods_from(state["hoods"], len(self.bank.vectors), dev)
        self.discovery_s = state["discovery_s"]
        self.gen.set_state(state["rng"])
        self.acc = EpochAccumulator(**state["accumulator"])
        self.history = state["history"]
        self.elapsed = state["elapsed"]
        # The decoding pass measured the same images: keep the statistics training started with.
        self.mean.copy_(state["mean"])
        self.std.copy_(state["std"])


def _hoods_from(saved: dict[str, Any] | None, n: int,
                dev: torch.device) -> Neighbourhoods | None:
    if saved is None:
        return None
    if saved["anchors"].numel() == 0:
        return no_neighbourhoods(n, dev)
    anchors, neighbours = saved["anchors"].to(dev), saved["neighbours"].to(dev)
    return Neighbourhoods(anchors, neighbours, positive_table(n, anchors, neighbours),
                          saved["quality"], saved["entropy_mean"])


def fingerprint(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


class Checkpoints:
    """Writes the run's checkpoint (rank 0 alone: every replica holds the same state) and
    knows when the next mid-epoch one is due."""

    def __init__(self, out: Path, interval_s: float, main: bool, started: float) -> None:
        self.path = out / CHECKPOINT
        self.interval_s = interval_s
        self.main = main
        self.last = started

    def due(self) -> bool:
        return time.monotonic() - self.last > self.interval_s

    def save(self, state: RunState, extra_name: str | None = None) -> None:
        if self.main:
            saved = state.to_dict()
            checkpoint.save(self.path, saved)
            if extra_name:
                checkpoint.save(self.path.parent / extra_name, saved)
        self.last = time.monotonic()


def finished_run(out: Path, config: TrainConfig) -> tuple[dict[str, Any], list[Any]] | None:
    """(metrics, history) of a finished run in `out` with the same config, which is returned
    rather than trained again; None when there is none."""
    metrics_path, ckpt_path = out / "metrics.json", out / CHECKPOINT
    if not all(p.exists() for p in (metrics_path, ckpt_path, out / "encoder.pt")):
        return None
    state = checkpoint.load(ckpt_path)
    cfg = state["config"]
    if state["round"] < cfg["rounds"] - 1 or state["epoch"] < cfg["epochs_per_round"]:
        return None
    if TrainConfig.from_dict(cfg).training_identity() != config.training_identity():
        raise TrainerError(f"{out} holds a finished run with a different config; "
                           "use a new output folder")
    return json.loads(metrics_path.read_text()), state["history"]

"""Whether the training forward pass runs compiled (torch.compile) or eager."""

from __future__ import annotations

import shutil
from typing import cast

import torch

from trainer.config import TrainConfig

COMPILE_MIN_STEPS = 2000  # below this the one-off compilation costs more than it saves


def compiled_forward(model: torch.nn.Module, config: TrainConfig, cuda: bool,
                     n_train: int) -> torch.nn.Module | None:
    """A compiled `model` for long CUDA runs, or None (eager). On CPU `auto` stays eager:
    measured within +-8 % of eager (docs/benchmarks.md), not worth a one-off compilation and
    a C compiler."""
    steps = config.total_epochs * max(1, n_train // config.batch_size)
    has_cc = shutil.which("cc") is not None or shutil.which("gcc") is not None
    want = config.compile == "always" or (
        config.compile == "auto" and cuda and steps >= COMPILE_MIN_STEPS and has_cc)
    return cast(torch.nn.Module, torch.compile(model)) if want else None

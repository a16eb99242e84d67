"""One optimisation step of AND: forward, loss against the bank, backward, optimiser step.

The backward pass is split at the features, so the backbone's and the bank's shares of a step
are timed apart (the progress records' time_backbone_s and time_bank_s).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from trainer.bank import MemoryBank
from trainer.device import Runtime
from trainer.loss import and_loss, positives_of

log = logging.getLogger(__name__)


@dataclass
class StepOut:
    features: torch.Tensor  # detached, for the bank update
    loss: torch.Tensor
    times: tuple[float, float, float, float]  # forward start, loss, bank backward, step done


class TrainStep:
    """`eager` is the model to train (DDP-wrapped over several processes); `compiled`, when
    given, runs full batches (compiled once per input shape: the last short batch of an epoch
    runs eager). Should compiling fail at its first use, the run goes on eagerly."""

    def __init__(self, eager: torch.nn.Module, compiled: torch.nn.Module | None,
                 optimizer: torch.optim.Optimizer, bank: MemoryBank, tau: float,
                 rt: Runtime, profile: bool = False) -> None:
        self.eager, self.compiled = eager, compiled
        self.optimizer, self.bank, self.tau = optimizer, bank, tau
        self.rt = rt
        self.profile = profile  # synchronise CUDA around phases so timings are exact
        self._compiled_checked = compiled is None

    def sync(self) -> None:
        if self.rt.cuda and self.profile:
            torch.cuda.synchronize()

    def __call__(self, x: torch.Tensor, index: torch.Tensor, positives: torch.Tensor,
                 full: bool, scale: float = 1.0) -> StepOut:
        """`scale` weights this process's loss (the mean over its slice) so that DDP's average
        over processes is the mean over the global batch."""
        if not full or self.compiled is None:
            return self._run(self.eager, x, index, positives, scale)
        if self._compiled_checked:
            return self._run(self.compiled, x, index, positives, scale)
        try:
            out = self._run(self.compiled, x, index, positives, scale)
        except Exception:
            # Compilation failed (no compiler, an unsupported op): train eagerly instead.
            # Nothing was applied yet: the optimiser steps after a successful backward pass.
            log.warning("torch.compile failed; training without it", exc_info=True)
            self.compiled = None
            self.optimizer.zero_grad(set_to_none=True)
            out = self._run(self.eager, x, index, positives, scale)
        self._compiled_checked = True
        return out

    def _run(self, net: torch.nn.Module, x: torch.Tensor, index: torch.Tensor,
             positives: torch.Tensor, scale: float) -> StepOut:
        t1 = time.perf_counter()
        with self.rt.autocast():
            features = net(x)
        feats = features.detach().requires_grad_(True)
        self.sync()
        t2 = time.perf_counter()
        loss = and_loss(feats, self.bank.vectors, positives_of(index, positives), self.tau)
        (loss * scale if scale != 1.0 else loss).backward()
        self.sync()
        t3 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        features.backward(feats.grad)
        self.optimizer.step()
        self.sync()
        t4 = time.perf_counter()
        return StepOut(feats.detach(), loss.detach(), (t1, t2, t3, t4))

"""The memory bank: one unit vector per training image, the non-parametric class prototypes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MemoryBank(nn.Module):
    """N x D bank V of running-average features (AND_SPEC §2).

    Initialised uniform in [-sqrt(3/D), sqrt(3/D)] so rows start near unit norm. After each
    optimiser step the batch rows move towards the new features:
        v_i <- normalize(m * v_i + (1 - m) * f_i),  m = `momentum` (0.5).
    It is a buffer, never a parameter: it gets no gradients and is saved in checkpoints.
    """

    vectors: torch.Tensor

    def __init__(self, n: int, dim: int, momentum: float = 0.5,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.momentum = momentum
        bound = math.sqrt(3.0 / dim)
        init = torch.rand(n, dim, generator=generator).mul_(2 * bound).sub_(bound)
        self.register_buffer("vectors", init)

    @torch.no_grad()
    def update(self, index: torch.Tensor, features: torch.Tensor) -> None:
        """Momentum update of rows `index` (distinct) with detached `features`."""
        m = self.momentum
        mixed = self.vectors.index_select(0, index).mul_(m).add_(features.detach().float(),
                                                                  alpha=1.0 - m)
        self.vectors.index_copy_(0, index, F.normalize(mixed, dim=1))

"""One training run over several processes: what each process needs to know about the others.

The engine stays one loop; with a `Distributed` context it
- splits every global batch (the same permutation on every process, drawn from the shared
  seed) into one contiguous slice per process, so the samples of a step are those of a
  single-process run with the same batch_size and seed;
- averages gradients with DistributedDataParallel, each process's loss weighted by its share
  of the global batch (equal shares: weight 1), which makes the step that of the whole batch;
- keeps ONE memory bank: the features of a step are summed into a global-batch buffer (each
  process fills its slice, the rest is zero) and every process applies the same momentum
  update to its replica, so the replicas stay equal bit for bit;
- lets rank 0 decide discovery, checkpoints and stopping, and broadcasts the decisions.

Gloo on CPU, NCCL on CUDA. `GlobalBatchNorm` is batch norm over the global batch for CPU
processes (torch's SyncBatchNorm runs on GPUs only).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from trainer.discovery import Neighbourhoods, discover, positive_table

# Reasons rank 0 may stop for, sent as their position in this list (0: go on).
STOP_REASONS = ("", "canceled", "time limit", "worker shutting down", "interrupted",
                "stopped")


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run; the default process group is already initialised."""

    rank: int
    world: int
    local_rank: int = 0
    local_world: int = 1
    # Compare a hash of every process's bank after every step (tests, debugging).
    check_replicas: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed:
        """The context torchrun (or trainer.launcher) describes in the environment."""
        return cls(rank=int(os.environ["RANK"]), world=int(os.environ["WORLD_SIZE"]),
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                   local_world=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
                   check_replicas=os.environ.get("AND_CHECK_REPLICAS") == "1")

    def bounds(self, batch: int) -> tuple[int, int]:
        """This process's slice [lo, hi) of a global batch of `batch` rows: sizes differ by at
        most one, the first processes taking the remainder."""
        return slice_bounds(batch, self.rank, self.world)

    def broadcast_(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.broadcast(tensor, src=0)
        return tensor

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather_batch(self, features: torch.Tensor, batch: int) -> torch.Tensor:
        """batch x D features of the whole global batch, in its order, on every process:
        every slice is written by one process and zero elsewhere, so the sum is exact."""
        lo, hi = self.bounds(batch)
        out = features.new_zeros(batch, features.shape[1], dtype=torch.float32)
        out[lo:hi] = features.float()
        return self.sum_(out)

    def stop_decision(self, reason: str | None, save: bool,
                      device: torch.device) -> tuple[str | None, bool]:
        """Rank 0's (reason, save now) reaches every process."""
        code = 0
        if self.main and reason:
            code = STOP_REASONS.index(reason) if reason in STOP_REASONS else len(STOP_REASONS) - 1
        flags = torch.tensor([code, int(save)], dtype=torch.int64, device=device)
        self.broadcast_(flags)
        code, saved = int(flags[0]), bool(flags[1])
        chosen = (reason if self.main else STOP_REASONS[code]) if code else None
        return chosen, saved

    def assert_replicas_equal(self, bank: torch.Tensor, step: str) -> None:
        """Every process's bank is the same, bit for bit (a hash of it, gathered)."""
        digest = hashlib.sha256(bank.detach().cpu().contiguous().numpy().tobytes()).digest()
        mine = torch.tensor(list(digest[:8]), dtype=torch.int64, device=bank.device)
        hashes = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(hashes, mine)
        if any(not torch.equal(h, hashes[0]) for h in hashes):
            raise RuntimeError(f"memory banks of the processes differ after {step}")


def discover_on_rank0(ctx: Distributed, bank: torch.Tensor, count: int, k: int, tau: float,
                      labels: torch.Tensor | None) -> Neighbourhoods:
    """Rank 0 discovers on its bank and broadcasts anchors and neighbours: every process
    then builds the same positive table (no process relies on its own floating-point
    ties coming out the same)."""
    hoods = discover(bank, count, k, tau, labels) if ctx.main else None
    if hoods is not None:
        anchors, neighbours = hoods.anchors.contiguous(), hoods.neighbours.contiguous()
    else:
        anchors = torch.empty(count, dtype=torch.long, device=bank.device)
        neighbours = torch.empty(count, k, dtype=torch.long, device=bank.device)
    ctx.broadcast_(anchors)
    ctx.broadcast_(neighbours)
    if hoods is not None:
        return hoods
    return Neighbourhoods(anchors, neighbours, positive_table(len(bank), anchors, neighbours),
                          None, 0.0)


def slice_bounds(batch: int, rank: int, world: int) -> tuple[int, int]:
    base, extra = divmod(batch, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


@torch.no_grad()
def global_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance over the global batch, and its element count."""
    dims = [0, *range(2, x.dim())]
    c = x.shape[1]
    count = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
    stats = torch.cat([x.sum(dims), (x * x).sum(dims), count])
    dist.all_reduce(stats)
    n = stats[-1]
    mean = stats[:c] / n
    return mean, (stats[c:2 * c] / n - mean * mean).clamp_(min=0), n


class _GlobalBatchNormFn(torch.autograd.Function):
    """Batch norm with the global batch's moments; the backward pass reduces the two sums
    it needs over all processes (the moments depend on every process's inputs)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                mean: torch.Tensor, invstd: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        xhat = (x - mean.view(shape)) * invstd.view(shape)
        ctx.save_for_backward(xhat, weight, invstd, n)
        return xhat * weight.view(shape) + bias.view(shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        xhat, weight, invstd, n = ctx.saved_tensors
        dims = [0, *range(2, grad.dim())]
        c = grad.shape[1]
        shape = [1, c] + [1] * (grad.dim() - 2)
        local = torch.cat([grad.sum(dims), (grad * xhat).sum(dims)])
        grad_bias, grad_weight = local[:c].clone(), local[c:].clone()
        dist.all_reduce(local)
        mean_g, mean_gx = local[:c] / n, local[c:] / n
        grad_x = (grad - mean_g.view(shape) - xhat * mean_gx.view(shape)) * (
            weight * invstd).view(shape)
        # Parameter gradients stay local: DistributedDataParallel averages them.
        return grad_x, grad_weight, grad_bias, None, None, None


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d over the global batch while training in a process group (its state dict is
    BatchNorm2d's); plain batch norm in eval mode or without one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        mean, var, n = global_moments(x)
        # Registered buffers of BatchNorm2d (track_running_stats is on in our backbones).
        assert self.num_batches_tracked is not None and self.running_mean is not None
        assert self.running_var is not None
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 0.1
            self.running_mean.mul_(1 - m).add_(mean, alpha=m)
            self.running_var.mul_(1 - m).add_(var * n / (n - 1).clamp(min=1), alpha=m)
        return _GlobalBatchNormFn.apply(x, self.weight, self.bias, mean,
                                        torch.rsqrt(var + self.eps), n)


def synchronise_batch_norm(model: nn.Module, cuda: bool) -> nn.Module:
    """Every BatchNorm2d of `model` normalised over the global batch."""
    if cuda:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, GlobalBatchNorm):
            bn = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                 child.track_running_stats)
            bn.load_state_dict(child.state_dict())
            setattr(model, name, bn)
        else:
            synchronise_batch_norm(child, cuda)
    return model

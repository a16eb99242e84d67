"""Anchor neighbourhood discovery, once at the start of each round r >= 1 (AND_SPEC §3).

1. Entropy of every sample on the bank: H_i = -sum_j p_ij log p_ij, p_i = softmax(v_i V^T / tau).
2. Anchors: the floor(N * min(1, r * rate)) samples with the lowest entropy.
3. Each anchor's k nearest other samples by cosine similarity on the bank.
Everything is computed in row blocks sized so that no block holds more than `block_elems`
similarities: memory stays bounded for any N, and nothing loops over samples in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

DEFAULT_BLOCK_ELEMS = 1 << 25  # 32 M similarities, 128 MB in fp32


@torch.no_grad()
def entropy(bank: torch.Tensor, tau: float, block_elems: int = DEFAULT_BLOCK_ELEMS) -> torch.Tensor:
    """Entropy of softmax(v_i V^T / tau) over all N slots, self included."""
    n = bank.shape[0]
    out = torch.empty(n, device=bank.device)
    step = max(1, block_elems // n)
    for start in range(0, n, step):
        block = bank[start:start + step]
        logp = torch.log_softmax(block @ bank.t() / tau, dim=1)
        out[start:start + block.shape[0]] = -(logp.exp() * logp).sum(1)
    return out


def select_anchors(entropies: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the `count` lowest-entropy samples (ties broken by index, for determinism)."""
    return torch.argsort(entropies, stable=True)[:count]


@torch.no_grad()
def nearest_neighbours(bank: torch.Tensor, anchors: torch.Tensor, k: int,
                       block_elems: int = DEFAULT_BLOCK_ELEMS) -> torch.Tensor:
    """|A| x k indices of each anchor's most cosine-similar samples, the anchor excluded."""
    unit = F.normalize(bank, dim=1)
    n = unit.shape[0]
    out = torch.empty(anchors.numel(), k, dtype=torch.long, device=bank.device)
    step = max(1, block_elems // n)
    for start in range(0, anchors.numel(), step):
        rows = anchors[start:start + step]
        sims = unit.index_select(0, rows) @ unit.t()
        sims.scatter_(1, rows.view(-1, 1), float("-inf"))
        out[start:start + rows.numel()] = sims.topk(k, dim=1).indices
    return out


def positive_table(n: int, anchors: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """N x (1+k) table: row i is [i, its neighbours] for anchors, [i, -1, ...] otherwise."""
    k = neighbours.shape[1] if neighbours.numel() else 0
    table = torch.full((n, 1 + k), -1, dtype=torch.long, device=anchors.device)
    table[:, 0] = torch.arange(n, device=anchors.device)
    if anchors.numel():
        table[anchors, 1:] = neighbours
    return table


def neighbourhood_quality(labels: torch.Tensor, anchors: torch.Tensor,
                          neighbours: torch.Tensor) -> float | None:
    """Share of anchor-neighbour pairs with the same class, over labelled pairs only."""
    if anchors.numel() == 0:
        return None
    a = labels[anchors].view(-1, 1).expand_as(neighbours)
    b = labels[neighbours]
    known = (a >= 0) & (b >= 0)
    if not known.any():
        return None
    return float((a[known] == b[known]).float().mean())


@dataclass
class Neighbourhoods:
    anchors: torch.Tensor  # |A| dataset rows
    neighbours: torch.Tensor  # |A| x k
    positives: torch.Tensor  # N x (1+k), see positive_table
    quality: float | None
    entropy_mean: float


def discover(bank: torch.Tensor, n_anchors: int, k: int, tau: float,
             labels: torch.Tensor | None = None,
             block_elems: int = DEFAULT_BLOCK_ELEMS) -> Neighbourhoods:
    """The whole discovery step of one round."""
    h = entropy(bank, tau, block_elems)
    anchors = select_anchors(h, n_anchors)
    neighbours = nearest_neighbours(bank, anchors, k, block_elems)
    quality = None if labels is None else neighbourhood_quality(labels, anchors, neighbours)
    return Neighbourhoods(
        anchors=anchors,
        neighbours=neighbours,
        positives=positive_table(bank.shape[0], anchors, neighbours),
        quality=quality,
        entropy_mean=float(h.mean()),
    )


def no_neighbourhoods(n: int, device: torch.device | str = "cpu") -> Neighbourhoods:
    """Round 0: every sample is its own class."""
    empty = torch.empty(0, dtype=torch.long, device=device)
    return Neighbourhoods(
        anchors=empty, neighbours=empty.view(0, 0),
        positives=positive_table(n, empty, empty.view(0, 0)), quality=None, entropy_mean=0.0,
    )

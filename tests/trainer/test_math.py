"""The method's math on cases small enough to check by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.bank import MemoryBank
from trainer.discovery import (
    discover,
    entropy,
    nearest_neighbours,
    neighbourhood_quality,
    positive_table,
    select_anchors,
)
from trainer.knn import accuracy, knn_scores, vote
from trainer.loss import and_loss, and_loss_reference

TAU = 0.1


def _bank():
    # Four unit vectors on the plane: 0 and 1 close together, 2 and 3 opposite them.
    angles = torch.tensor([0.0, 0.3, math.pi, math.pi + 0.2], dtype=torch.float64)
    return torch.stack([angles.cos(), angles.sin()], 1)


# --- loss (Eq. 7) ------------------------------------------------------------------------

def _by_hand(own_dots: list[list[float]], positives: list[list[int]]) -> float:
    """Eq. 7 with the math module alone: -mean log(sum over positives of softmax(dot / tau))."""
    total = 0.0
    for dots, pos in zip(own_dots, positives, strict=True):
        exps = [math.exp(d / TAU) for d in dots]
        total -= math.log(sum(exps[j] for j in pos) / sum(exps))
    return total / len(own_dots)


# The dot products of bank rows 0 and 2 with the four bank vectors (angles 0, 0.3, pi, pi+0.2).
DOTS_0 = [1.0, math.cos(0.3), -1.0, -math.cos(0.2)]
DOTS_2 = [-1.0, -math.cos(0.3), 1.0, math.cos(0.2)]


def test_instance_loss_is_cross_entropy_with_own_slot():
    bank = _bank()
    f = bank[[0, 2]].clone()
    positives = positive_table(4, torch.empty(0, dtype=torch.long),
                               torch.empty(0, 1, dtype=torch.long))[[0, 2]]
    by_hand = _by_hand([DOTS_0, DOTS_2], [[0], [2]])
    # The first term: exp(10) over exp(10) + exp(10 cos .3) + exp(-10) + exp(-10 cos .2).
    assert by_hand == pytest.approx(0.5465, abs=1e-4)
    assert and_loss(f, bank, positives, TAU).item() == pytest.approx(by_hand, rel=1e-12)
    assert and_loss_reference(f, bank, positives, TAU).item() == pytest.approx(by_hand,
                                                                                rel=1e-12)


def test_anchor_loss_sums_probability_over_its_neighbourhood():
    bank = _bank()
    f = bank[[0, 2]].clone()
    # Sample 0 is an anchor with neighbour 1; sample 2 is an instance.
    table = positive_table(4, torch.tensor([0]), torch.tensor([[1]]))
    by_hand = _by_hand([DOTS_0, DOTS_2], [[0, 1], [2]])
    loss = and_loss(f, bank, table[[0, 2]], TAU)
    assert loss.item() == pytest.approx(by_hand, rel=1e-12)
    assert by_hand < _by_hand([DOTS_0, DOTS_2], [[0], [2]])  # the neighbour's share counts


def test_fused_loss_matches_autograd_and_is_stable():
    torch.manual_seed(0)
    f = F.normalize(torch.randn(6, 8, dtype=torch.float64), dim=1).requires_grad_()
    bank = F.normalize(torch.randn(20, 8, dtype=torch.float64), dim=1)
    pos = torch.tensor([[0, 3, 4], [1, -1, -1], [2, 5, 6], [3, -1, -1], [4, 7, 8], [5, -1, -1]])
    fused = and_loss(f, bank, pos, TAU)
    (g_fused,) = torch.autograd.grad(fused, f)
    ref = and_loss_reference(f, bank, pos, TAU)
    (g_ref,) = torch.autograd.grad(ref, f)
    assert fused.item() == pytest.approx(ref.item(), rel=1e-12)
    assert torch.allclose(g_fused, g_ref, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x: and_loss(x, bank, pos, TAU), (f,))
    # A tiny temperature overflows a naive softmax; log-sum-exp does not.
    assert torch.isfinite(and_loss(f.detach(), bank, pos, 1e-4))


# --- memory bank --------------------------------------------------------------------------

def test_bank_init_is_uniform_with_rows_near_unit_norm():
    bank = MemoryBank(5000, 128, generator=torch.Generator().manual_seed(0))
    bound = math.sqrt(3 / 128)
    assert bank.vectors.abs().max() <= bound
    assert bank.vectors.norm(dim=1).mean().item() == pytest.approx(1.0, abs=0.02)
    assert not bank.vectors.requires_grad


def test_bank_momentum_update_by_hand():
    bank = MemoryBank(3, 2, momentum=0.5)
    bank.vectors.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    bank.update(torch.tensor([0, 1]), torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    s = 1 / math.sqrt(2)
    assert torch.allclose(bank.vectors, torch.tensor([[s, s], [0.0, 1.0], [1.0, 0.0]]))


# --- discovery ----------------------------------------------------------------------------

def test_entropy_by_hand():
    bank = _bank().float()
    p = torch.softmax(bank @ bank.t() / TAU, 1)
    by_hand = -(p * p.log()).sum(1)
    assert torch.allclose(entropy(bank, TAU), by_hand, atol=1e-5)
    # Blocked (one row at a time) gives the same answer.
    assert torch.allclose(entropy(bank, TAU, block_elems=1), by_hand, atol=1e-5)


def test_anchors_are_the_lowest_entropy_samples():
    h = torch.tensor([0.5, 0.1, 0.9, 0.1, 0.3])
    assert select_anchors(h, 3).tolist() == [1, 3, 4]  # ties by index
    assert select_anchors(h, 0).tolist() == []


def test_neighbours_exclude_the_anchor_itself():
    bank = _bank().float()
    bank[3] = bank[2]  # an exact duplicate must still not make 2 its own neighbour
    nn = nearest_neighbours(bank, torch.tensor([0, 2, 3]), k=1)
    assert nn.view(-1).tolist() == [1, 3, 2]
    nn2 = nearest_neighbours(bank, torch.tensor([0, 2, 3]), k=2, block_elems=1)
    assert nn2[:, 0].tolist() == [1, 3, 2]
    assert all(a not in row for a, row in zip([0, 2, 3], nn2.tolist(), strict=True))


def test_positive_table_and_quality():
    table = positive_table(4, torch.tensor([2, 0]), torch.tensor([[3], [1]]))
    assert table.tolist() == [[0, 1], [1, -1], [2, 3], [3, -1]]
    labels = torch.tensor([0, 0, 1, 0])
    assert neighbourhood_quality(labels, torch.tensor([0, 2]), torch.tensor([[1], [3]])) == 0.5
    unknown = torch.tensor([-1, -1, -1, -1])
    assert neighbourhood_quality(unknown, torch.tensor([0]), torch.tensor([[1]])) is None


def test_discover_round():
    bank = _bank().float()
    hoods = discover(bank, n_anchors=2, k=1, tau=TAU, labels=torch.tensor([0, 0, 1, 1]))
    assert hoods.anchors.numel() == 2
    assert hoods.quality == 1.0  # each anchor's neighbour is its twin
    assert hoods.positives.shape == (4, 2)


# --- weighted kNN -------------------------------------------------------------------------

def test_vote_weights_are_exp_s_over_sigma():
    sims = torch.tensor([[0.9, 0.8, 0.1]])
    labels = torch.tensor([[1, 0, 0]])
    scores = vote(sims, labels, n_classes=2, sigma=0.1)
    w = [math.exp(9), math.exp(8), math.exp(1)]
    assert scores[0, 1].item() == pytest.approx(w[0] / sum(w), rel=1e-5)
    assert scores[0, 0].item() == pytest.approx((w[1] + w[2]) / sum(w), rel=1e-5)


def test_knn_on_a_four_point_bank():
    keys = _bank().float()
    labels = torch.tensor([0, 0, 1, 1])
    queries = F.normalize(torch.tensor([[1.0, 0.1], [-1.0, -0.05]]), dim=1)
    scores = knn_scores(queries, keys, labels, n_classes=2, k=2, sigma=0.1)
    assert scores.argmax(1).tolist() == [0, 1]
    acc = accuracy(scores, torch.tensor([0, 0]))
    assert (acc.top1, acc.top5, acc.queries) == (0.5, 1.0, 2)
    # Leave-one-out: each key's own entry is excluded, its twin decides.
    loo = knn_scores(keys, keys, labels, 2, k=1, sigma=0.1, query_rows=torch.arange(4))
    assert loo.argmax(1).tolist() == [0, 0, 1, 1]


def test_knn_k_larger_than_the_keys_uses_them_all():
    keys = _bank().float()
    scores = knn_scores(keys[:1], keys, torch.tensor([0, 0, 1, 1]), 2, k=200, sigma=0.1)
    assert scores.sum().item() == pytest.approx(1.0)

"""The label-free score's parts on cases small enough to check by hand."""

import math

import numpy as np
import pytest
import torch

from trainer.backbones import Encoder
from trainer.label_free import (
    AUGMENTATIONS,
    MEASURE,
    MEASURE_BEFORE,
    augmented_views,
    combine,
    effective_rank,
    label_free_score,
    list_agreement,
    log_rank_score,
    measure_of,
    neighbour_lists,
    parts_of,
    retrieval_ranks,
    sample_rows,
    uniformity,
    untrained_model,
    with_measure,
)

SQUARE = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.float32)


def test_a_view_equal_to_its_original_is_found_first():
    c = torch.from_numpy(SQUARE)
    assert retrieval_ranks(c, c).tolist() == [0, 0, 0, 0]


def test_rank_counts_the_items_closer_to_the_view_than_its_original():
    clean = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    # Item 0's view is itself. Item 1's view (1, 0) has cosines 1, 0, 0.6 with the items:
    # two come before item 1. Item 2's view (0.8, 0.6) has cosines 0.8, 0.6, 0.96: item 2
    # comes first.
    views = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.8, 0.6]])
    assert retrieval_ranks(clean, views).tolist() == [0, 2, 0]


def test_identical_embeddings_find_nothing():
    """A collapsed encoder: every item ties with its original, and ties count against it."""
    same = torch.ones(5, 3) / math.sqrt(3)
    assert retrieval_ranks(same, same).tolist() == [4, 4, 4, 4, 4]
    parts = parts_of(same.numpy(), same.numpy(), k=2)
    assert parts["retrieval_top1"] == 0.0
    assert parts["retrieval_mrr"] == pytest.approx(1 / 5)
    assert parts["retrieval_log_rank"] == pytest.approx(0.0)  # last of 5, every time
    assert combine(parts) == parts["retrieval_log_rank"]


def test_the_log_rank_score_by_hand():
    # Among n = 8 items, ranks 0, 1, 3 and 7: log(1 + r) / log(8) = 0, 1/3, 2/3 and 1.
    ranks = torch.tensor([0, 1, 3, 7])
    assert log_rank_score(ranks, 8) == pytest.approx(1 - (0 + 1 / 3 + 2 / 3 + 1) / 4)
    assert log_rank_score(torch.zeros(8, dtype=torch.long), 8) == 1.0
    assert log_rank_score(torch.zeros(1, dtype=torch.long), 1) == 1.0  # nothing to confuse


def test_a_few_near_duplicates_cost_the_log_rank_little_and_the_reciprocal_rank_most():
    """Every view finds 3 near-duplicates before its own copy, among 1,000 items: the
    reciprocal rank loses three quarters, the log-rank score log(4) / log(1000), a fifth."""
    clean = torch.eye(1000)
    views = clean.clone()
    for i in range(10):  # item i's view is nearer to 3 other items than to item i
        views[i] = clean[i] * 0.1 + clean[[(i + 1) % 1000, (i + 2) % 1000, (i + 3) % 1000]].sum(0)
    ranks = retrieval_ranks(clean, views / views.norm(dim=1, keepdim=True))[:10]
    assert ranks.tolist() == [3] * 10
    assert float((1.0 / (ranks.double() + 1)).mean()) == pytest.approx(1 / 4)
    assert log_rank_score(ranks, 1000) == pytest.approx(1 - math.log(4) / math.log(1000))
    assert log_rank_score(ranks, 1000) > 0.79


def test_a_score_without_a_recorded_measure_is_of_the_measure_before():
    assert measure_of({"label_free": 0.3}) == MEASURE_BEFORE == "retrieval_mrr"
    assert measure_of({"label_free": 0.3, "label_free_measure": MEASURE}) == MEASURE


def test_with_measure_names_it_only_beside_a_score():
    assert with_measure({"label_free": 0.3}) == {"label_free": 0.3,
                                                 "label_free_measure": MEASURE_BEFORE}
    recorded = {"label_free": 0.3, "label_free_measure": MEASURE}
    assert with_measure(recorded) is recorded
    assert with_measure({"loss": 1.0}) == {"loss": 1.0}  # an epoch without a score


def test_neighbour_lists_leave_the_item_itself_out():
    c = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    assert neighbour_lists(c, c, 1).tolist() == [[1], [0], [1]]
    assert neighbour_lists(c, c, 5).shape == (3, 2)  # k shrinks to n - 1


def test_list_agreement_is_the_shared_share():
    a = torch.tensor([[1, 2], [0, 2]])
    b = torch.tensor([[2, 3], [2, 0]])
    assert list_agreement(a, b) == pytest.approx((1 / 2 + 2 / 2) / 2)


def test_effective_rank_of_orthonormal_rows_and_of_a_line():
    assert effective_rank(torch.eye(3)) == pytest.approx(3.0)
    line = torch.tensor([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]])
    assert effective_rank(line) == pytest.approx(1.0)


def test_uniformity_of_two_opposite_points():
    # |x - y|^2 = 4 for the only pair: log exp(-2 * 4) = -8
    assert uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0)


def test_score_embeds_one_view_per_sampled_item_once():
    calls = []

    def embed_views(rows):
        calls.append(rows)
        return SQUARE[rows]

    result = label_free_score(SQUARE, embed_views, sample=3, seed=1)
    assert len(calls) == 1 and len(calls[0]) == 3 and result.items == 3
    assert list(calls[0]) == sorted(set(calls[0].tolist()))
    assert result.parts["retrieval_top1"] == 1.0
    assert result.as_dict()["score"] == result.score


def test_score_refuses_views_of_the_wrong_shape():
    with pytest.raises(ValueError, match="expected"):
        label_free_score(SQUARE, lambda rows: SQUARE[:2])


def test_sample_rows_is_everything_below_the_limit_and_fixed_by_the_seed():
    assert sample_rows(4, 10).tolist() == [0, 1, 2, 3]
    assert sample_rows(100, 10, seed=3).tolist() == sample_rows(100, 10, seed=3).tolist()
    assert len(set(sample_rows(100, 10).tolist())) == 10


def test_views_are_uint8_and_fixed_by_the_seed():
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    a = augmented_views(images, AUGMENTATIONS["train"], seed=4, chunk=4)
    b = augmented_views(images, AUGMENTATIONS["train"], seed=4, chunk=4)
    assert a.dtype == torch.uint8 and a.shape == images.shape
    assert torch.equal(a, b) and not torch.equal(a, images)


def test_untrained_model_is_the_seeded_init_and_leaves_the_global_rng_alone():
    torch.manual_seed(7)
    expected = Encoder("small_cnn", 8).state_dict()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    model = untrained_model("small_cnn", 8, 32, torch.zeros(3), torch.ones(3), seed=7,
                            device="cpu")
    assert torch.equal(torch.rand(1), before)
    for name, value in model.model.state_dict().items():
        assert torch.equal(value.cpu(), expected[name])
    out = model.embed_uint8(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert out.shape == (2, 8)


def test_a_run_scores_its_baselines_once_where_the_sample_is_the_same(monkeypatch):
    """The finished run's figures reuse the baselines its progress measured on the same sample
    and views, and measure them again on any other sample."""
    from tests.trainer.test_baseline_and_map import _prepared
    from trainer import label_free_baselines as lfb

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    prepared = _prepared(images, [0, 1] * 6, [False] * 12)
    model = untrained_model("small_cnn", 8, 32, torch.zeros(3), torch.ones(3), seed=1,
                            device="cpu", precision="fp32")
    rows = lfb.sample_rows(12, 12, 0)
    sample = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    base = lfb.baseline_scores(sample, lfb.sample_views(sample), prepared, model.meta,
                               device="cpu", precision="fp32", every_part=False)
    measured = lfb.MeasuredBaselines(rows, 0, False, base)
    calls = []
    real = lfb.baseline_scores
    monkeypatch.setattr(lfb, "baseline_scores", lambda *a, **k: calls.append(1) or real(*a, **k))

    reused = lfb.score_with_baselines(prepared, model, every_part=False, measured=measured)
    assert calls == []
    assert reused["pixel_label_free"] == base["pixels"].score
    assert reused["untrained_label_free"] == base["untrained"].score
    measured_again = lfb.score_with_baselines(prepared, model, every_part=False)
    assert calls == [1]
    assert measured_again["pixel_label_free"] == pytest.approx(reused["pixel_label_free"])
    assert measured_again["untrained_label_free"] == pytest.approx(
        reused["untrained_label_free"], abs=1e-6)
    lfb.score_with_baselines(prepared, model, sample=6, every_part=False, measured=measured)
    lfb.score_with_baselines(prepared, model, seed=1, every_part=False, measured=measured)
    assert calls == [1, 1, 1]

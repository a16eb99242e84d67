"""The label-free score's parts on cases small enough to check by hand."""

import math

import numpy as np
import pytest
import torch

from trainer.backbones import Encoder
from trainer.label_free import (
    AUGMENTATIONS,
    augmented_views,
    effective_rank,
    label_free_score,
    list_agreement,
    neighbour_lists,
    parts_of,
    retrieval_ranks,
    sample_rows,
    uniformity,
    untrained_model,
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

"""The promotion gate's arithmetic on cases small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.evaluation import knn_evaluation, knn_protocol
from trainer.judge import correct, label_free_margin, paired, unpaired


def test_a_paired_gain_must_exceed_two_standard_errors_of_the_per_query_differences():
    # Differences 1, 0, 0, 0: mean 0.25, sample std 0.5, standard error 0.25, margin 0.5.
    v = paired(np.array([1.0, 1, 1, 0]), np.array([0.0, 1, 1, 0]), "version a")
    assert (v.candidate, v.incumbent, v.items) == (0.75, 0.5, 4)
    assert v.margin == pytest.approx(0.5) and v.promote is False
    assert "a gain of 0.2500, not more than the margin 0.5000" in v.reason
    # Right on every query where the other was wrong on every one: no spread, a gain of 1.
    v = paired(np.ones(4), np.zeros(4), "version a")
    assert v.margin == 0.0 and v.promote is True
    # A loss is not "not more than the margin" (as if a small one were fine): it says so.
    v = paired(np.array([0.0, 1, 1, 0]), np.array([1.0, 1, 1, 0]), "version a")
    assert v.promote is False and v.reason.endswith(
        "a loss of 0.2500, where it needed a gain of more than the margin 0.5000")


def test_identical_answers_are_no_gain():
    v = paired(np.array([1.0, 0, 1]), np.array([1.0, 0, 1]), "version a")
    assert v.margin == 0.0 and v.promote is False and "a gain of 0.0000" in v.reason


def test_an_unpaired_gain_is_judged_by_the_difference_of_two_proportions():
    # 0.9 against 0.7 on 100 queries: standard error sqrt((0.09 + 0.21) / 100) = 0.0548.
    v = unpaired(0.9, 0.7, 100, "raw pixels")
    assert v.margin == pytest.approx(2 * math.sqrt(0.003)) and v.promote is True
    assert unpaired(0.75, 0.7, 100, "raw pixels").promote is False
    assert unpaired(0.6, 0.9, 100, "raw pixels").promote is False


def test_correct_marks_each_query_by_the_weighted_vote():
    # Two training points per class on a circle; two queries, one near each class, and one
    # query labelled 1 that sits among class 0: it is answered wrongly.
    keys = [(1.0, 0.0), (0.8, 0.6), (-1.0, 0.0), (-0.8, 0.6)]
    queries = [(0.96, 0.28), (-0.96, 0.28), (0.6, 0.8)]
    vectors = np.array(keys + queries, dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.array([0, 0, 1, 1, 0, 1, 1])
    is_eval = np.array([False] * 4 + [True] * 3)
    assert correct(vectors, labels, is_eval, 2, k=2, sigma=0.1).tolist() == [1.0, 1.0, 0.0]
    # Without an evaluation split every labelled item is a query, its own entry left out.
    loo = correct(vectors[:4], labels[:4], np.zeros(4, bool), 2, k=1, sigma=0.1)
    assert loo.tolist() == [1.0, 1.0, 1.0, 1.0]
    # Labels only in the evaluation split (its training items unlabelled): its labelled items
    # vote on each other, each left out. The first and third are each other's nearest (cosine
    # 0.8) with other labels: both wrong; the second's nearest other is the third (-0.352
    # against -0.84), labelled as it is.
    only_eval = np.array([-1, -1, -1, -1, 0, 1, 1])
    assert correct(vectors, only_eval, is_eval, 2, k=1, sigma=0.1).tolist() == [0.0, 1.0, 0.0]
    figures = knn_evaluation(vectors, only_eval, is_eval, 2, k=1, sigma=0.1)
    assert figures is not None and figures["knn_protocol"] == "leave-one-out"
    assert figures["knn_queries"] == 3 and figures["loo_knn_top1"] == pytest.approx(1 / 3)


def test_the_protocol_the_labels_allow():
    is_eval = np.array([False, False, True, True])
    test = knn_protocol(np.array([0, 1, 0, 1]), is_eval)
    assert (test.name, test.queries.tolist(), test.keys.tolist()) == ("test", [2, 3], [0, 1])
    train_only = knn_protocol(np.array([0, 1, -1, -1]), is_eval)
    assert (train_only.name, train_only.queries.tolist()) == ("leave-one-out", [0, 1])
    eval_only = knn_protocol(np.array([-1, -1, 0, 1]), is_eval)
    assert (eval_only.name, eval_only.keys.tolist()) == ("leave-one-out", [2, 3])
    none = knn_protocol(np.full(4, -1), is_eval)
    assert len(none.queries) == len(none.keys) == 0


def test_a_label_free_margin_is_the_measured_spread_or_the_paired_noise_when_larger():
    from trainer.label_free import GATE_MARGIN, log_rank_terms

    # Ranks among 4 items: terms 1 - log(1 + r) / log(4), r = 0 and 3 give 1 and 0.
    terms = log_rank_terms(torch.tensor([0, 3, 0, 3]), 4).numpy()
    assert terms.tolist() == pytest.approx([1.0, 0.0, 1.0, 0.0])
    # Differences +0.5, -0.5, +0.5, -0.5 against all-0.5: sd sqrt(4 x 0.25 / 3) = 1 / sqrt(3),
    # se sd / sqrt(4), margin 2 se = 1 / sqrt(3).
    half = np.full(4, 0.5)
    assert label_free_margin(terms, half) == pytest.approx(1 / math.sqrt(3))
    # Differences of 0.01 everywhere: no spread, so the measured one stands.
    assert label_free_margin(half + 0.01, half) == GATE_MARGIN
    # Without terms (a run that kept none), or of other samples: the measured spread.
    assert label_free_margin(None, half) == label_free_margin(terms, half[:3]) == GATE_MARGIN

"""Another encoder scored on a finished run's own sample and views
(trainer/label_free_reference.py): what the promotion gate compares a new model with."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import CIFAR_SLICE
from trainer.data import open_collection
from trainer.label_free_reference import score_on_run_sample


def test_the_runs_own_encoder_scores_again_what_its_run_measured(trained_runs):
    """The same rows, views and precision as the run's own figure: the same score, exactly;
    the other run's encoder on those items scores something else."""
    first, second = trained_runs.values()
    metrics = json.loads((first / "metrics.json").read_text())
    collection = open_collection(CIFAR_SLICE)
    again = score_on_run_sample(first / "encoder.pt", first, collection,
                                precision=metrics["precision"])
    assert again is not None and again.items == metrics["label_free_items"] == 120
    assert again.score == metrics["label_free"]
    other = score_on_run_sample(second / "encoder.pt", first, collection,
                                precision=metrics["precision"])
    assert other is not None and other.items == 120 and other.score != pytest.approx(
        again.score, abs=1e-6)


def test_a_sample_the_collection_does_not_hold_cannot_be_scored(trained_runs, tmp_path):
    first = next(iter(trained_runs.values()))
    collection = open_collection(CIFAR_SLICE)
    missing = collection.subset(np.arange(1, len(collection)))  # the first item deleted
    assert score_on_run_sample(first / "encoder.pt", first, missing) is None

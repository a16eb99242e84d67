"""Fixtures shared by the trainer's tests."""

from __future__ import annotations

import pytest

from tests.conftest import CIFAR_SLICE
from trainer.config import TrainConfig
from trainer.data import open_collection
from trainer.engine import Trainer


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A real one-epoch run on the CIFAR slice: what a bundle is written from."""
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig.from_dict({"backbone": "small_cnn", "rounds": 1, "epochs_per_round": 1,
                                    "batch_size": 32, "num_workers": 0, "knn_k": 10})
    Trainer(config, open_collection(CIFAR_SLICE), out).run()
    return out

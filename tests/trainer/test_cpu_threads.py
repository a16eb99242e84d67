"""A job's `cpu_threads`: torch's threads while it runs, put back after it (a worker process
runs one job after another)."""

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.config import TrainConfig
from trainer.cpu_threads import cpu_threads
from trainer.data import open_collection
from trainer.device import cpu_count
from trainer.engine import Trainer
from trainer.errors import ConfigError


def test_the_block_sets_the_threads_and_puts_them_back():
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with cpu_threads(0):  # the default: as torch started
        assert torch.get_num_threads() == before
    cores = cpu_count()
    with cpu_threads(cores + 5):  # never more threads than cores
        assert torch.get_num_threads() == cores
    with pytest.raises(RuntimeError), cpu_threads(1):
        raise RuntimeError("a failed job")
    assert torch.get_num_threads() == before


def test_a_run_trains_on_its_cpu_threads_and_leaves_the_process_as_it_was(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        folder = tmp_path / "data" / label
        folder.mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                folder / f"{i}.png")
    config = TrainConfig.from_dict({
        "backbone": "small_cnn", "rounds": 1, "epochs_per_round": 2, "batch_size": 8,
        "knn_k": 5, "num_workers": 0, "device": "cpu", "cpu_threads": 1})
    before = torch.get_num_threads()
    seen: list[int] = []
    Trainer(config, open_collection(tmp_path / "data"), tmp_path / "run",
            on_epoch=lambda record: seen.append(torch.get_num_threads())).run()
    assert seen == [1, 1]
    assert torch.get_num_threads() == before
    # A runtime setting: a run resumes whatever its threads (the same computation).
    assert "cpu_threads" not in config.training_identity()
    with pytest.raises(ConfigError, match="cpu_threads"):
        TrainConfig.from_dict({"cpu_threads": -1})

import json

import numpy as np
import pytest
import torch

from trainer import checkpoint
from trainer.config import TrainConfig
from trainer.data import open_collection
from trainer.engine import Trainer
from trainer.errors import TrainerError, TrainingStopped

TINY = {"backbone": "small_cnn", "rounds": 2, "epochs_per_round": 2, "batch_size": 32,
        "knn_k": 20, "num_workers": 0, "seed": 3}


def _run(data, out, stop_after=None, **overrides):
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return "test stop" if stop_after is not None and calls["n"] == stop_after else None

    records = []
    trainer = Trainer(TrainConfig.from_dict(TINY | overrides), open_collection(data), out,
                      on_epoch=records.append, should_stop=should_stop)
    return trainer.run(), records


def _state(out):
    blob = torch.load(out / "encoder.pt", weights_only=True)
    return blob["state_dict"], checkpoint.load(out / "checkpoint.pt")["bank"]


# 96 training images / batch 32 = 3 steps per epoch, 12 steps in all.
@pytest.mark.parametrize("stop_after", [2, 3, 8])
def test_interrupted_then_resumed_run_is_bit_identical(cifar_dir, tmp_path, stop_after):
    whole, _ = _run(cifar_dir, tmp_path / "whole")
    with pytest.raises(TrainingStopped):
        _run(cifar_dir, tmp_path / "split", stop_after=stop_after)
    resumed, _ = _run(cifar_dir, tmp_path / "split")
    weights_a, bank_a = _state(tmp_path / "whole")
    weights_b, bank_b = _state(tmp_path / "split")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert torch.equal(bank_a, bank_b)
    assert [r["loss"] for r in whole.history] == [r["loss"] for r in resumed.history]
    assert whole.metrics["knn_top1"] == resumed.metrics["knn_top1"]
    lines = (tmp_path / "split" / "progress.jsonl").read_text().splitlines()
    assert len(lines) == 4  # one record per epoch, none repeated by the resumption


def test_tiny_training_on_real_images_learns(digits_dir, tmp_path):
    result, records = _run(digits_dir, tmp_path / "run", rounds=2, epochs_per_round=3,
                           batch_size=128, seed=0)
    m = result.metrics
    assert m["knn_protocol"] == "test" and m["knn_queries"] == 363
    assert m["knn_top1"] > 0.3  # chance is 0.1
    assert len(records) == 6 and records[0]["round"] == 0 and records[-1]["round"] == 1
    assert records[3]["anchors"] == 1434 // 1  # rounds=2: S = 1/1, every sample an anchor
    assert records[3]["neighbourhood_quality"] is not None
    assert all(r["images_per_s"] > 0 and r["eta_s"] >= 0 for r in records)
    out = tmp_path / "run"
    for name in ("encoder.pt", "config.json", "metrics.json", "curves.png", "embeddings.npz",
                 "progress.jsonl", "checkpoint.pt", "checkpoint_round0.pt"):
        assert (out / name).exists(), name
    saved = np.load(out / "embeddings.npz")
    assert saved["vectors"].shape == (1797, 128)
    assert np.allclose(np.linalg.norm(saved["vectors"], axis=1), 1, atol=1e-4)
    assert "train/0/0000.png" in set(saved["ids"].tolist())
    assert json.loads((out / "metrics.json").read_text())["knn_top1"] == m["knn_top1"]


def test_finished_run_is_returned_not_retrained(cifar_dir, tmp_path):
    first, _ = _run(cifar_dir, tmp_path / "run", rounds=1, epochs_per_round=1)
    again, records = _run(cifar_dir, tmp_path / "run", rounds=1, epochs_per_round=1)
    assert records == [] and again.metrics == first.metrics


def test_resuming_with_another_config_is_refused(cifar_dir, tmp_path):
    with pytest.raises(TrainingStopped):
        _run(cifar_dir, tmp_path / "run", stop_after=1)
    with pytest.raises(TrainerError, match="lr"):
        _run(cifar_dir, tmp_path / "run", lr=0.1)
    # Runtime-only keys may change between an interruption and its resumption.
    _run(cifar_dir, tmp_path / "run", checkpoint_interval_s=60.0)


def test_unlabelled_data_trains_without_evaluation(cifar_dir, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, p in enumerate(sorted((cifar_dir / "train").rglob("*.jpg"))):
        p.rename(flat / f"{i:03d}.jpg")
    result, records = _run(flat, tmp_path / "run", rounds=2, epochs_per_round=1)
    assert "knn_top1" not in result.metrics and records[-1]["knn_top1"] is None
    assert records[-1]["neighbourhood_quality"] is None and records[-1]["anchors"] == 96


def test_labels_without_test_split_give_leave_one_out_figures(tmp_path, cifar_dir):
    result, _ = _run(cifar_dir / "train", tmp_path / "run", rounds=1, epochs_per_round=1)
    assert "knn_top1" not in result.metrics
    assert 0 <= result.metrics["loo_knn_top1"] <= 1
    assert result.metrics["knn_protocol"] == "leave-one-out"


def test_a_failing_compiled_forward_falls_back_to_eager_without_changing_the_result(
        cifar_dir, tmp_path, monkeypatch):
    eager, _ = _run(cifar_dir, tmp_path / "eager", compile="never")

    class Broken(torch.nn.Module):
        calls = 0

        def forward(self, x):
            Broken.calls += 1
            raise RuntimeError("no C compiler")

    monkeypatch.setattr(torch, "compile", lambda model: Broken())
    fallback, _ = _run(cifar_dir, tmp_path / "fallback", compile="always")
    assert Broken.calls == 1  # tried once, then eager for the rest of the run
    weights_a, bank_a = _state(tmp_path / "eager")
    weights_b, bank_b = _state(tmp_path / "fallback")
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert torch.equal(bank_a, bank_b)
    assert eager.metrics["knn_top1"] == fallback.metrics["knn_top1"]

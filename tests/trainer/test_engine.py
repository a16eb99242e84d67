import json

import numpy as np
import pytest
import torch

from trainer import checkpoint
from trainer.config import TrainConfig
from trainer.data import open_collection
from trainer.engine import Trainer
from trainer.errors import TrainerError, TrainingStopped
from trainer.label_free import MEASURE
from trainer.label_free_baselines import LABEL_FREE_TERMS

TINY = {"backbone": "small_cnn", "rounds": 2, "epochs_per_round": 2, "batch_size": 32,
        "knn_k": 20, "num_workers": 0, "seed": 3}


def _run(data, out, stop_after=None, max_steps=None, calls=None, **overrides):
    """Train; `calls` (a dict) counts the trainer's should_stop() calls: one per batch."""
    calls = {"n": 0} if calls is None else calls
    calls.setdefault("n", 0)

    def should_stop():
        calls["n"] += 1
        return "test stop" if stop_after is not None and calls["n"] == stop_after else None

    records = []
    trainer = Trainer(TrainConfig.from_dict(TINY | overrides), open_collection(data), out,
                      on_epoch=records.append, should_stop=should_stop, max_steps=max_steps)
    return trainer.run(), records


def _state(out):
    blob = torch.load(out / "encoder.pt", weights_only=True)
    return blob["state_dict"], checkpoint.load(out / "checkpoint.pt")["bank"]


# 96 training images / batch 32 = 3 steps per epoch, 12 steps in all.
@pytest.mark.parametrize("stop_after", [2, 3, 8])
def test_interrupted_then_resumed_run_is_bit_identical_on_cpu(cifar_dir, tmp_path, stop_after):
    whole, _ = _run(cifar_dir, tmp_path / "whole", device="cpu")
    with pytest.raises(TrainingStopped):
        _run(cifar_dir, tmp_path / "split", stop_after=stop_after, device="cpu")
    resumed, _ = _run(cifar_dir, tmp_path / "split", device="cpu")
    assert whole.metrics["device"] == resumed.metrics["device"] == "cpu"
    weights_a, bank_a = _state(tmp_path / "whole")
    weights_b, bank_b = _state(tmp_path / "split")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert torch.equal(bank_a, bank_b)
    assert [r["loss"] for r in whole.history] == [r["loss"] for r in resumed.history]
    assert whole.metrics["knn_top1"] == resumed.metrics["knn_top1"]
    lines = (tmp_path / "split" / "progress.jsonl").read_text().splitlines()
    assert len(lines) == 4  # one record per epoch, none repeated by the resumption


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_interrupted_then_resumed_run_on_cuda_matches_within_tolerance(cifar_dir, tmp_path):
    """On CUDA some kernels are not deterministic: a resumed run is the same run up to
    floating-point noise, not bit for bit."""
    whole, _ = _run(cifar_dir, tmp_path / "whole", device="cuda")
    with pytest.raises(TrainingStopped):
        _run(cifar_dir, tmp_path / "split", stop_after=5, device="cuda")
    resumed, _ = _run(cifar_dir, tmp_path / "split", device="cuda")
    assert whole.metrics["device"].startswith("cuda")
    weights_a, bank_a = _state(tmp_path / "whole")
    weights_b, bank_b = _state(tmp_path / "split")
    for k in weights_a:
        if weights_a[k].is_floating_point():
            assert torch.allclose(weights_a[k], weights_b[k], rtol=1e-3, atol=1e-4), k
        else:
            assert torch.equal(weights_a[k], weights_b[k]), k
    assert torch.allclose(bank_a, bank_b, rtol=1e-3, atol=1e-4)
    assert [r["loss"] for r in whole.history] == pytest.approx(
        [r["loss"] for r in resumed.history], rel=1e-3)
    lines = (tmp_path / "split" / "progress.jsonl").read_text().splitlines()
    assert len(lines) == 4


DIGITS = {"rounds": 2, "epochs_per_round": 3, "batch_size": 128, "seed": 0}


@pytest.fixture(scope="module")
def digits_runs(digits_dir, tmp_path_factory):
    """The digits trained briefly, and the same network (same seed, same split) untrained:
    every epoch cut to no step, so evaluation sees the initial weights."""
    root = tmp_path_factory.mktemp("digits-runs")
    trained = _run(digits_dir, root / "run", **DIGITS)
    untrained = _run(digits_dir, root / "untrained", max_steps=0, **DIGITS)
    return root / "run", trained, untrained


def test_tiny_training_on_real_images_trains_evaluates_and_saves(digits_runs):
    """What a short run does and writes. Whether it learned is the next test's question: a
    loss that falls does not say it (it falls as much with a learning rate of 1e-9, as the
    memory bank fills with real features)."""
    out, (result, records), (untrained, _) = digits_runs
    m = result.metrics
    assert m["knn_protocol"] == "test" and m["knn_queries"] == 363
    # The untrained network and raw pixels are measured on the same split.
    assert untrained.metrics["knn_queries"] == m["knn_queries"]
    assert untrained.metrics["pixel_knn_top1"] == m["pixel_knn_top1"] > 0.9
    assert len(records) == 6 and records[0]["round"] == 0 and records[-1]["round"] == 1
    assert records[3]["anchors"] == 1434 // 1  # rounds=2: S = 1/1, every sample an anchor
    assert records[3]["neighbourhood_quality"] is not None
    assert all(r["images_per_s"] > 0 and r["eta_s"] >= 0 for r in records)
    for name in ("encoder.pt", "config.json", "metrics.json", "curves.png", "embeddings.npz",
                 "progress.jsonl", "checkpoint.pt", "checkpoint_round0.pt"):
        assert (out / name).exists(), name
    saved = np.load(out / "embeddings.npz")
    assert saved["vectors"].shape == (1797, 128)
    assert np.allclose(np.linalg.norm(saved["vectors"], axis=1), 1, atol=1e-4)
    assert "train/0/0000.png" in set(saved["ids"].tolist())
    assert json.loads((out / "metrics.json").read_text())["knn_top1"] == m["knn_top1"]


def test_the_label_free_score_is_in_the_progress_of_every_evaluation_epoch(digits_runs):
    """Measured where kNN is (the round ends here), on every item (1,797 are fewer than the
    progress sample), beside raw pixels' and the untrained network's scores on every epoch."""
    _, (result, records), (_, untrained_records) = digits_runs
    m = result.metrics
    assert [r["label_free"] is not None for r in records] == [False, False, True] * 2
    assert [r["knn_top1"] is not None for r in records] == [False, False, True] * 2
    for r in records:
        assert r["label_free_items"] == 1797
        assert r["label_free_measure"] == m["label_free_measure"] == MEASURE
        assert (r["pixel_label_free"], r["untrained_label_free"]) == pytest.approx(
            (m["pixel_label_free"], m["untrained_label_free"]))
    # The last epoch's model is the published one, measured on the same items and views.
    assert records[-1]["label_free"] == pytest.approx(m["label_free"], abs=1e-6)
    # Each item's term of the model's and raw pixels' scores is kept for the gate's noise.
    out = digits_runs[0]
    with np.load(out / LABEL_FREE_TERMS) as terms:
        assert terms["model"].shape == terms["pixels"].shape == (1797,)
        assert (terms["model"].mean(), terms["pixels"].mean()) == pytest.approx(
            (m["label_free"], m["pixel_label_free"]), abs=1e-9)
    # A run whose epochs take no step keeps the untrained network: it scores as that one.
    assert untrained_records[-1]["label_free"] == pytest.approx(
        untrained_records[-1]["untrained_label_free"], abs=1e-6)


@pytest.mark.xfail(strict=True, reason=(
    "at this budget (2 x 3 epochs) training lowers the digits' kNN top-1 below the untrained "
    "network's (measured 0.68 against 0.92; 0.83 with bank_init=embeddings; raw pixels "
    "0.99; docs/benchmarks.md); strict: "
    "the day it passes, it must become a plain test"))
def test_tiny_training_beats_the_untrained_network_and_raw_pixels(digits_runs):
    """The claim that training learns: a margin over the same network untrained (same seed,
    same split) and over raw pixels."""
    _, (result, _), (untrained, _) = digits_runs
    m = result.metrics
    assert m["knn_top1"] >= untrained.metrics["knn_top1"] + 0.05
    assert m["knn_top1"] >= m["pixel_knn_top1"]


@pytest.mark.parametrize("bank_init", ["embeddings", "random"])
def test_a_run_from_scratch_starts_its_bank_from_the_network_or_from_noise(cifar_dir, tmp_path,
                                                                          bank_init):
    """`embeddings`: each training image's slot holds the starting network's embedding of
    it; `random` (the default): the reference's uniform vectors in [-sqrt(3/D), sqrt(3/D)],
    whose rows are only about unit length. Every epoch is cut to no step, so the bank at the
    end is the bank at the start, and the run's published vectors are the starting
    network's."""
    config = TrainConfig.from_dict(TINY | {"rounds": 1, "epochs_per_round": 1,
                                           "bank_init": bank_init})
    trainer = Trainer(config, open_collection(cifar_dir), tmp_path / "run", max_steps=0)
    trainer.run()
    bank = trainer.state.bank.vectors.numpy()
    start = np.load(tmp_path / "run" / "embeddings.npz")["vectors"][trainer.train_rows]
    assert bank.shape == start.shape == (96, 128)
    if bank_init == "embeddings":
        np.testing.assert_allclose(bank, start, atol=1e-5)
    else:
        assert np.abs(bank).max() <= (3 / 128) ** 0.5
        assert np.abs(np.linalg.norm(bank, axis=1) - 1).max() > 0.01
        assert np.abs(bank @ start.T).max() < 0.5  # no relation to the network


def test_finished_run_is_returned_not_retrained(cifar_dir, tmp_path):
    first, _ = _run(cifar_dir, tmp_path / "run", rounds=1, epochs_per_round=1)
    again, records = _run(cifar_dir, tmp_path / "run", rounds=1, epochs_per_round=1)
    assert records == [] and again.metrics == first.metrics


def test_resuming_with_another_config_is_refused(cifar_dir, tmp_path):
    with pytest.raises(TrainingStopped):
        _run(cifar_dir, tmp_path / "run", stop_after=1)
    with pytest.raises(TrainerError, match="lr"):
        _run(cifar_dir, tmp_path / "run", lr=0.1)
    # Runtime-only keys may change between an interruption and its resumption; the run then
    # resumes after the batch it stopped at instead of starting again: of the 12 batches (96
    # images / 32, 2 x 2 epochs) it trains the 11 left.
    resumed = {}
    _, records = _run(cifar_dir, tmp_path / "run", checkpoint_interval_s=60.0,
                      calls=resumed)
    assert resumed["n"] == 11
    assert [(r["round"], r["epoch"]) for r in records] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    whole = {}
    _run(cifar_dir, tmp_path / "whole", calls=whole)
    assert whole["n"] == 12


def test_unlabelled_data_trains_without_evaluation(cifar_dir, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, p in enumerate(sorted((cifar_dir / "train").rglob("*.jpg"))):
        p.rename(flat / f"{i:03d}.jpg")
    result, records = _run(flat, tmp_path / "run", rounds=2, epochs_per_round=1)
    assert "knn_top1" not in result.metrics and records[-1]["knn_top1"] is None
    # The label-free score is measured where kNN would be: at the end of each round.
    assert all(r["label_free"] is not None and r["label_free_items"] == 96 for r in records)
    assert records[-1]["neighbourhood_quality"] is None and records[-1]["anchors"] == 96


def test_labels_without_test_split_give_leave_one_out_figures(tmp_path, cifar_dir):
    result, _ = _run(cifar_dir / "train", tmp_path / "run", rounds=1, epochs_per_round=1)
    assert "knn_top1" not in result.metrics
    assert result.metrics["knn_protocol"] == "leave-one-out"
    # The figure is leave-one-out over the run's own embeddings, computed here by hand: each
    # item's k most similar others (itself excluded) vote with weights exp(s / sigma).
    saved = np.load(tmp_path / "run" / "embeddings.npz")
    vectors, labels = saved["vectors"].astype(np.float64), saved["labels"]
    k, sigma = TINY["knn_k"], 0.1
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    right = 0
    for row, label in zip(sims, labels, strict=True):
        nearest = np.argsort(-row)[:k]
        votes = np.bincount(labels[nearest], weights=np.exp(row[nearest] / sigma),
                            minlength=labels.max() + 1)
        right += int(votes.argmax() == label)
    assert result.metrics["knn_queries"] == len(labels) == 96
    assert abs(result.metrics["loo_knn_top1"] - right / len(labels)) <= 1 / len(labels)


def test_a_failing_compiled_forward_falls_back_to_eager_without_changing_the_result(
        cifar_dir, tmp_path, monkeypatch):
    eager, _ = _run(cifar_dir, tmp_path / "eager", compile="never", device="cpu")

    class Broken(torch.nn.Module):
        calls = 0

        def forward(self, x):
            Broken.calls += 1
            raise RuntimeError("no C compiler")

    monkeypatch.setattr(torch, "compile", lambda model: Broken())
    fallback, _ = _run(cifar_dir, tmp_path / "fallback", compile="always", device="cpu")
    assert Broken.calls == 1  # tried once, then eager for the rest of the run
    weights_a, bank_a = _state(tmp_path / "eager")
    weights_b, bank_b = _state(tmp_path / "fallback")
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert torch.equal(bank_a, bank_b)
    assert eager.metrics["knn_top1"] == fallback.metrics["knn_top1"]

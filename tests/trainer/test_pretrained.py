"""Pretrained starts (init_from=imagenet): torchvision's weights entry, the file found under the
data root or in the torch hub cache or fetched by torch.hub with its hash check, and a run that
starts from exactly those weights, normalised as ImageNet was, reporting the start beside the
model.

No network here: a real torchvision ResNet-18 state dict stands in for ImageNet's
(tests/imagenet_weights.py)."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.imagenet_weights import stand_in, wrong_file
from trainer import pretrained
from trainer.bundle import write_bundle
from trainer.cli import main
from trainer.config import TrainConfig
from trainer.data import open_collection
from trainer.engine import Trainer
from trainer.errors import ConfigError, TrainingStopped
from trainer.pretrained import FOLDER, IMAGENET, WeightsUnavailable, weights_file

TINY = {"backbone": "resnet18", "image_size": 32, "init_from": IMAGENET, "rounds": 1,
        "epochs_per_round": 1, "batch_size": 32, "knn_k": 10, "num_workers": 0,
        "device": "cpu", "precision": "fp32"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture()
def weights(tmp_path, monkeypatch):
    data_root = tmp_path / "data"
    data_root.mkdir()
    return stand_in(tmp_path, monkeypatch, data_root)


def test_the_entry_is_torchvisions_imagenet_resnet18():
    spec = pretrained.WEIGHTS["resnet18"]
    assert spec.name == "torchvision ResNet18_Weights.IMAGENET1K_V1"
    assert spec.url == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert (spec.file_name, spec.hash_prefix) == ("resnet18-f37072fd.pth", "f37072fd")
    assert spec.mean == pytest.approx(IMAGENET_MEAN) and spec.std == pytest.approx(IMAGENET_STD)
    with pytest.raises(ConfigError, match=r"backbone=resnet18 \(this run uses small_cnn"):
        pretrained.weights_for("small_cnn")


def test_offline_without_the_file_names_it_and_where_it_goes(weights):
    spec, name = weights.spec, weights.spec.file_name
    with pytest.raises(WeightsUnavailable) as off:
        weights_file("resnet18", weights.data_root, download=False)
    assert f"the file {name}" in off.value.message
    assert f"place it at DATA_ROOT/{FOLDER}/{name}" in off.value.message
    assert "downloads are off" in off.value.message and spec.url in off.value.message
    # Downloads allowed, but the address cannot be reached: the same answer, with the reason.
    gone = dataclasses.replace(spec, url=(weights.file.parent / "gone" / name).as_uri())
    pretrained.WEIGHTS["resnet18"] = gone
    with pytest.raises(WeightsUnavailable, match=r"the download from file:.*failed"):
        weights_file("resnet18", weights.data_root, download=True)
    # On the command line (no data root), the place is the torch hub cache.
    with pytest.raises(WeightsUnavailable, match=f"place it at {weights.cache}"):
        weights_file("resnet18", download=False)
    assert not (weights.data_root / FOLDER / name).exists()


def test_torch_hub_downloads_into_the_data_root_with_its_hash_check(weights):
    path = weights_file("resnet18", weights.data_root, download=True)
    assert path == weights.data_root / FOLDER / weights.spec.file_name
    assert path.read_bytes() == weights.file.read_bytes()
    # A server answering with other contents: torch.hub's hash check refuses it, keeps nothing.
    other = weights.data_root.parent / "other"
    wrong_file(other / weights.spec.file_name)
    pretrained.WEIGHTS["resnet18"] = dataclasses.replace(
        weights.spec, url=(other / weights.spec.file_name).as_uri())
    path.unlink()
    with pytest.raises(ConfigError, match=r"torch\.hub's hash check") as wrong:
        weights_file("resnet18", weights.data_root, download=True)
    assert not isinstance(wrong.value, WeightsUnavailable)
    assert list((weights.data_root / FOLDER).iterdir()) == []


def test_the_cached_file_is_checked_and_copied_under_the_data_root(weights):
    wrong_file(weights.cache)  # the right name, other contents
    with pytest.raises(ConfigError, match=r"its sha256 begins [0-9a-f]{8}, where "
                       rf"{weights.spec.file_name} must begin {weights.spec.hash_prefix}"):
        weights_file("resnet18", weights.data_root, download=False)
    weights.cache.write_bytes(weights.file.read_bytes())
    path = weights_file("resnet18", weights.data_root, download=False)
    assert path == weights.data_root / FOLDER / weights.spec.file_name
    assert path.read_bytes() == weights.file.read_bytes()
    assert weights_file("resnet18", download=False) == weights.cache  # the command line's
    wrong_file(path)  # the data root's copy comes first, and is checked too
    with pytest.raises(ConfigError, match=f"{FOLDER}/{weights.spec.file_name} under the data "
                       "root is not torchvision ResNet18_Weights.IMAGENET1K_V1"):
        weights_file("resnet18", weights.data_root, download=False)


def test_a_run_starts_from_exactly_those_weights_normalised_as_imagenet(weights, cifar_dir,
                                                                        tmp_path):
    place = weights.data_root / FOLDER / weights.spec.file_name
    place.parent.mkdir()
    place.write_bytes(weights.file.read_bytes())
    config = TrainConfig.from_dict(TINY)
    # No optimiser step: the finished encoder is the network the run started from.
    run = Trainer(config, open_collection(cifar_dir), tmp_path / "run", max_steps=0,
                  init_weights=place).run()
    blob = torch.load(tmp_path / "run" / "encoder.pt", weights_only=True)
    trunk = [k for k in weights.state if not k.startswith("fc.")]
    assert len(trunk) > 100
    assert all(torch.equal(blob["state_dict"][f"net.{k}"], weights.state[k]) for k in trunk)
    assert blob["meta"]["mean"] == pytest.approx(IMAGENET_MEAN)
    assert blob["meta"]["std"] == pytest.approx(IMAGENET_STD)
    m = run.metrics
    assert m["init_from"] == IMAGENET
    assert m["init_weights"]["name"] == "torchvision ResNet18_Weights.IMAGENET1K_V1"
    assert m["init_weights"]["file"] == weights.spec.file_name
    assert m["init_weights"]["sha256"].startswith(weights.spec.hash_prefix)
    # The start's figures beside the model's; untouched, the model is that start.
    assert m["pretrained_knn_top1"] == m["knn_top1"]
    assert m["pretrained_label_free"] == m["label_free"] != m["untrained_label_free"]
    assert "pixel_knn_top1" in m
    first = json.loads((tmp_path / "run" / "progress.jsonl").read_text().splitlines()[0])
    assert first["pretrained_label_free"] is not None
    bundle = write_bundle(tmp_path / "run", tmp_path / "models", dataset="cifar10")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["init_weights"] == m["init_weights"]
    assert manifest["metrics"]["pretrained_knn_top1"] == m["pretrained_knn_top1"]


def test_a_resumed_run_measures_its_start_again(weights, cifar_dir, tmp_path):
    weights.cache.parent.mkdir(parents=True)
    weights.cache.write_bytes(weights.file.read_bytes())
    config = TrainConfig.from_dict(TINY | {"epochs_per_round": 2})
    fresh = Trainer(config, open_collection(cifar_dir), tmp_path / "a", max_steps=1).run()
    calls = []

    def stop_in_the_second_epoch():
        calls.append(1)
        return "stop" if len(calls) >= 2 else None

    with pytest.raises(TrainingStopped, match="stop"):
        Trainer(config, open_collection(cifar_dir), tmp_path / "b", max_steps=1,
                should_stop=stop_in_the_second_epoch).run()
    resumed = Trainer(config, open_collection(cifar_dir), tmp_path / "b", max_steps=1).run()
    for key in ("pretrained_knn_top1", "pretrained_label_free", "init_weights"):
        assert resumed.metrics[key] == fresh.metrics[key]


def test_the_command_line_starts_from_imagenet(weights, cifar_dir, tmp_path):
    weights.cache.parent.mkdir(parents=True)
    weights.cache.write_bytes(weights.file.read_bytes())
    out = tmp_path / "run"
    assert main(["train", "--data", str(cifar_dir), "--out", str(out), "--quiet",
                 "--set", *[f"{k}={v}" for k, v in TINY.items()]]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["init_weights"]["file"] == weights.spec.file_name
    blob = torch.load(out / "encoder.pt", weights_only=True)
    assert not torch.equal(blob["state_dict"]["net.conv1.weight"], weights.state["conv1.weight"])
    assert np.isfinite(metrics["pretrained_knn_top1"])


def test_the_command_line_refuses_a_wrong_file_under_torchvisions_name(cifar_dir, tmp_path):
    """The real entry, in a real subprocess: a file named as ImageNet's that is not it."""
    home = tmp_path / "torch"
    wrong_file(home / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    r = subprocess.run(
        [sys.executable, "-m", "trainer", "train", "--data", str(cifar_dir), "--out",
         str(tmp_path / "run"), "--quiet", "--set", "backbone=resnet18", "init_from=imagenet"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TORCH_HOME": str(home)})
    assert r.returncode == 2
    assert "is not torchvision ResNet18_Weights.IMAGENET1K_V1" in r.stderr
    assert "must begin f37072fd" in r.stderr
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in r.stderr

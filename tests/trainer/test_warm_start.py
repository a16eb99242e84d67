"""Starting from existing weights: this project's encoder files and torchvision ResNet-18
state dicts, loaded by the real loading code from files the tests write."""

import numpy as np
import pytest
import torch
from torchvision.models import resnet18

from trainer.backbones import Encoder
from trainer.config import TrainConfig
from trainer.data import open_collection
from trainer.engine import Trainer
from trainer.errors import ConfigError
from trainer.warm_start import check, load_initial_weights, resolve

TINY = {"backbone": "small_cnn", "rounds": 1, "epochs_per_round": 1, "batch_size": 32,
        "knn_k": 10, "num_workers": 0, "device": "cpu", "precision": "fp32"}


def _torchvision_file(tmp_path):
    torch.manual_seed(7)
    net = resnet18(weights=None)  # the layout of downloaded ImageNet weights
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(net.state_dict(), path)
    return path, net.state_dict()


def test_torchvision_resnet18_weights_load_into_every_layer_but_the_head(tmp_path):
    path, saved = _torchvision_file(tmp_path)
    model = Encoder("resnet18", 128)
    head_before = model.net.fc.weight.clone()
    assert "torchvision ResNet-18" in load_initial_weights(model, path)
    own = model.net.state_dict()
    trunk = [k for k in saved if not k.startswith("fc.")]
    assert len(trunk) > 100 and all(torch.equal(own[k], saved[k]) for k in trunk)
    assert torch.equal(model.net.fc.weight, head_before)  # 128-d head, not the 1000 classes
    # Saved from a DataParallel wrapper: the same weights under a `module.` prefix.
    wrapped = tmp_path / "wrapped.pth"
    torch.save({f"module.{k}": v for k, v in saved.items()}, wrapped)
    other = Encoder("resnet18", 128)
    load_initial_weights(other, wrapped)
    assert torch.equal(other.net.conv1.weight, saved["conv1.weight"])


def test_weights_that_do_not_fit_are_refused_by_name(tmp_path):
    path, _ = _torchvision_file(tmp_path)
    with pytest.raises(ConfigError, match="backbone=resnet18"):
        load_initial_weights(Encoder("small_cnn", 128), path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read"):
        load_initial_weights(Encoder("resnet18", 128), junk)
    odd = tmp_path / "odd.pth"
    torch.save({"weight": torch.zeros(3)}, odd)
    with pytest.raises(ConfigError, match="neither"):
        load_initial_weights(Encoder("resnet18", 128), odd)
    with pytest.raises(ConfigError, match="not a published model version or a file"):
        resolve("nothing-here", tmp_path)
    with pytest.raises(ConfigError, match="outside the data root"):
        resolve("../resnet18-imagenet.pth", files_root=tmp_path / "data")


def test_a_run_starts_from_a_published_encoder_and_its_embeddings(cifar_dir, tmp_path):
    first = Trainer(TrainConfig.from_dict(TINY), open_collection(cifar_dir), tmp_path / "a").run()
    source = tmp_path / "a" / "encoder.pt"
    with pytest.raises(ConfigError, match="embedding_dim"):
        check(str(source), "small_cnn", 64)
    config = TrainConfig.from_dict(TINY | {"init_from": str(source)})
    # No optimiser step at all: the run's embeddings must be the source encoder's, exactly.
    warm = Trainer(config, open_collection(cifar_dir), tmp_path / "b", max_steps=0).run()
    a = np.load(tmp_path / "a" / "embeddings.npz")["vectors"]
    b = np.load(tmp_path / "b" / "embeddings.npz")["vectors"]
    assert np.array_equal(a, b)
    assert warm.metrics["init_from"] == str(source)
    assert warm.metrics["knn_top1"] == first.metrics["knn_top1"]
    # The bank starts as those embeddings of the training images, not random vectors.
    bank = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["bank"]
    rows = open_collection(cifar_dir).train_indices
    assert torch.allclose(bank, torch.from_numpy(a[rows]))


def test_a_resnet18_run_starts_from_torchvision_weights(cifar_dir, tmp_path):
    path, _ = _torchvision_file(tmp_path)
    config = TrainConfig.from_dict(TINY | {"backbone": "resnet18", "image_size": 32,
                                            "init_from": str(path)})
    Trainer(config, open_collection(cifar_dir), tmp_path / "run", max_steps=0).run()
    blob = torch.load(tmp_path / "run" / "encoder.pt", weights_only=True)
    saved = torch.load(path, weights_only=True)
    assert torch.equal(blob["state_dict"]["net.layer4.1.conv2.weight"],
                       saved["layer4.1.conv2.weight"])

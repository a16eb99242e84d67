"""A stand-in for torchvision's ImageNet ResNet-18 weights, for tests without a network: a real
torchvision ResNet-18 state dict, named as torch.hub names files (its sha256 prefix), offered
at a file:// address that torch.hub downloads from like any other, with the torch hub cache
(TORCH_HOME) moved into the test's folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from trainer import pretrained


@dataclasses.dataclass
class Weights:
    spec: pretrained.PretrainedWeights
    file: Path  # where the "server" keeps the file
    state: dict[str, torch.Tensor]
    data_root: Path
    cache: Path  # the torch hub cache's copy, once there

    @property
    def placed(self) -> Path:
        """Where a job's copy goes: DATA_ROOT/.pretrained/<file>."""
        return self.data_root / pretrained.FOLDER / self.spec.file_name

    def place(self, path: Path | None = None) -> Path:
        path = path or self.placed
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.file.read_bytes())
        return path


def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_root: Path) -> Weights:
    tmp_path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(11)
    state = resnet18(weights=None).state_dict()
    staging = tmp_path / "staging.pth"
    torch.save(state, staging)
    name = f"resnet18-{pretrained.sha256(staging)[:8]}.pth"
    server = tmp_path / "server"
    server.mkdir()
    staging.rename(server / name)
    spec = dataclasses.replace(pretrained.WEIGHTS["resnet18"], url=(server / name).as_uri())
    monkeypatch.setitem(pretrained.WEIGHTS, "resnet18", spec)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return Weights(spec, server / name, state, data_root,
                   tmp_path / "torch" / "hub" / "checkpoints" / name)


def wrong_file(path: Path) -> None:
    """Another ResNet-18's weights at `path`: the right layout, other contents."""
    torch.manual_seed(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(resnet18(weights=None).state_dict(), path)

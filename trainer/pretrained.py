"""Pretrained starts: `init_from=imagenet` starts a `backbone=resnet18` run from torchvision's
ImageNet weights (`ResNet18_Weights.IMAGENET1K_V1`), found or fetched through torchvision's
weights API and torch.hub.

Where the file is looked for, in order:
1. DATA_ROOT/.pretrained/<file> (jobs: the one place every worker sees; hidden, so it is never
   listed as a dataset);
2. the torch hub cache, `torch.hub.get_dir()/checkpoints/<file>` (TORCH_HOME), where torchvision
   itself caches downloads; a job's copy found only there is copied under the data root, so a
   worker on another machine reads the same file;
3. when downloads are allowed, `torch.hub.load_state_dict_from_url` with check_hash fetches it
   into the first of those places.

The file name carries the first hex digits of the file's sha256 (torch.hub's rule, e.g.
resnet18-f37072fd.pth); a file found in place is checked against it too, since torch.hub checks
only what it downloads. An absent file, a failed download or a file of other contents is a
ConfigError naming the file, where to put it and where to get it.

The ImageNet network's first convolution expects inputs normalised with ImageNet's channel
statistics (the weights' transforms: mean 0.485 0.456 0.406, std 0.229 0.224 0.225), not the
dataset's own that a run measures otherwise: a run from these weights normalises with them,
and its encoder file records them, so queries are served the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

from trainer.collection import Collection
from trainer.errors import ConfigError
from trainer.evaluation import headline, knn_evaluation
from trainer.files import atomic_file

IMAGENET = "imagenet"  # the init_from value of a pretrained start
FOLDER = ".pretrained"  # under the data root
KEY = "init_from"
_HASH = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's HASH_REGEX: the sha256 prefix of a name


class WeightsUnavailable(ConfigError):
    """The pretrained weights are neither in place nor downloadable now."""


@dataclass(frozen=True)
class PretrainedWeights:
    """A torchvision weights entry: what a manifest names, where the file comes from, and the
    normalisation its network was trained with."""

    name: str  # e.g. "torchvision ResNet18_Weights.IMAGENET1K_V1"
    url: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def of(cls, weights: WeightsEnum) -> PretrainedWeights:
        transforms = weights.transforms()
        m, s = [float(v) for v in transforms.mean], [float(v) for v in transforms.std]
        return cls(name=f"torchvision {weights}", url=weights.url,
                   mean=(m[0], m[1], m[2]), std=(s[0], s[1], s[2]))

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def hash_prefix(self) -> str:
        found = _HASH.search(self.file_name)
        if found is None:
            raise ValueError(f"{self.file_name} carries no hash")
        return found.group(1)


# backbone -> the torchvision weights entry `init_from=imagenet` starts it from.
_ENTRIES = {"resnet18": ("ResNet18_Weights", "IMAGENET1K_V1")}


class _Weights(dict[str, PretrainedWeights]):
    """backbone -> its PretrainedWeights, read from torchvision when first asked for: importing
    torchvision costs about 2 s, which a process that never starts from them need not pay."""

    def __missing__(self, backbone: str) -> PretrainedWeights:
        if backbone not in _ENTRIES:
            raise KeyError(backbone)
        from torchvision import models

        enum_name, member = _ENTRIES[backbone]
        spec = PretrainedWeights.of(getattr(getattr(models, enum_name), member))
        self[backbone] = spec
        return spec


WEIGHTS = _Weights()


def weights_for(backbone: str) -> PretrainedWeights:
    try:
        return WEIGHTS[backbone]
    except KeyError:
        raise ConfigError(KEY, f"init_from={IMAGENET} starts from torchvision's ImageNet "
                          f"weights, which exist for backbone={', '.join(sorted(_ENTRIES))} "
                          f"(this run uses {backbone})") from None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, spec: PretrainedWeights) -> str:
    """The file's sha256, when it begins as the file name says; a ConfigError otherwise."""
    digest = sha256(path)
    if not digest.startswith(spec.hash_prefix):
        raise ConfigError(
            KEY, f"{_shown(path)} is not {spec.name}: its sha256 begins {digest[:8]}, where "
            f"{spec.file_name} must begin {spec.hash_prefix} (torch.hub's hash check); "
            f"replace it with the file downloaded from {spec.url}")
    return digest


def cache_file(spec: PretrainedWeights) -> Path:
    """Where torch.hub keeps the download (TORCH_HOME, or ~/.cache/torch)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / spec.file_name


def data_root_file(spec: PretrainedWeights, files_root: str | os.PathLike[str]) -> Path:
    return Path(files_root) / FOLDER / spec.file_name


def weights_file(backbone: str, files_root: str | os.PathLike[str] | None = None, *,
                 download: bool = True) -> Path:
    """The verified weights file of `backbone`'s pretrained start. `files_root`: the data root
    of a job (None on the command line: the torch hub cache alone); `download`: whether to
    fetch the file when it is in neither place."""
    spec = weights_for(backbone)
    cached = cache_file(spec)
    placed = data_root_file(spec, files_root) if files_root is not None else None
    if placed is not None and placed.is_file():
        verify(placed, spec)
        return placed
    if cached.is_file():
        verify(cached, spec)
        if placed is None:
            return cached
        _copy(cached, placed)
        return placed
    if not download:
        raise WeightsUnavailable(KEY, _missing(spec, placed, cached, "downloads are off"))
    target = placed if placed is not None else cached
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.load_state_dict_from_url(spec.url, model_dir=str(target.parent),
                                           map_location="cpu", progress=False,
                                           check_hash=True, file_name=spec.file_name,
                                           weights_only=True)
    except RuntimeError as exc:
        if "hash" not in str(exc):
            raise ConfigError(KEY, f"{spec.file_name} downloaded from {spec.url} cannot be "
                              f"read: {exc}") from exc
        raise ConfigError(KEY, f"the file downloaded from {spec.url} is not {spec.name} "
                          f"(torch.hub's hash check: {exc}); nothing was kept") from exc
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        raise WeightsUnavailable(
            KEY, _missing(spec, placed, cached, f"the download from {spec.url} failed "
                          f"({exc})")) from exc
    verify(target, spec)
    return target


def describe(path: Path, spec: PretrainedWeights) -> dict[str, Any]:
    """What a run's metrics and a bundle's manifest say about the weights it started from."""
    return {"name": spec.name, "file": spec.file_name, "sha256": sha256(path),
            "url": spec.url, "mean": list(spec.mean), "std": list(spec.std)}


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as src, atomic_file(target) as dst:
        shutil.copyfileobj(src, dst)


def _shown(path: Path) -> str:
    """A path as a message may show it: relative to the data root for a job's copy."""
    return f"{FOLDER}/{path.name} under the data root" if path.parent.name == FOLDER else str(path)


def _missing(spec: PretrainedWeights, placed: Path | None, cached: Path, why: str) -> str:
    where = (f"DATA_ROOT/{FOLDER}/{spec.file_name}" if placed is not None else str(cached))
    elsewhere = (f"neither under the data root ({FOLDER}/) nor in the torch hub cache "
                 f"({cached.parent})" if placed is not None else
                 f"not in the torch hub cache ({cached.parent}, set by TORCH_HOME)")
    return (f"init_from={IMAGENET} starts from {spec.name}, the file {spec.file_name} "
            f"(sha256 beginning {spec.hash_prefix}); it is {elsewhere}, and {why}. Download "
            f"{spec.url} where the network allows and place it at {where}")


def normalisation(init_from: str, backbone: str, mean: torch.Tensor,
                  std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The channel statistics a run normalises with: the pretrained weights' for a pretrained
    start (what their first convolution learnt on), the dataset's `mean` and `std` otherwise."""
    if init_from != IMAGENET:
        return mean, std
    spec = weights_for(backbone)
    return torch.tensor(spec.mean), torch.tensor(spec.std)


def knn_figures(embeddings: np.ndarray, collection: Collection, k: int,
                sigma: float) -> dict[str, Any]:
    """`pretrained_knn_top1` and `_top5`: the run's weighted kNN on the embeddings of the
    network it started from; nothing without labels."""
    knn = knn_evaluation(embeddings, collection.labels, collection.is_eval,
                         len(collection.classes), k, sigma)
    top1, top5 = headline(knn)
    if top1 is None:
        return {}
    return {"pretrained_knn_top1": top1, "pretrained_knn_top5": top5}

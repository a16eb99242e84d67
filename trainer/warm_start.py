"""Starting training from existing weights instead of random ones.

Two kinds of file are understood:
- an encoder file of this project (`encoder.pt`, as in a run folder or a published bundle):
  the whole encoder, for the same backbone and embedding dimension;
- a torchvision ResNet-18 state dict (e.g. ImageNet weights a user downloaded, a `.pth` of
  `torchvision.models.resnet18().state_dict()`), for `backbone=resnet18`: every layer but the
  classifier, whose place the embedding head takes (it starts random).
Anything else is refused with a message that says what was expected.

`init_from=imagenet` names torchvision's ImageNet weights for the backbone, a file of the
second kind found or fetched by trainer.pretrained.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from trainer import pretrained
from trainer.backbones import Encoder
from trainer.errors import ConfigError

KEY = "init_from"
# torchvision's classifier: replaced by the embedding head of the same shape class.
_TORCHVISION_HEAD = ("fc.weight", "fc.bias")


def _read(path: Path) -> dict:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise ConfigError(KEY, f"cannot read weights from {path.name}: {exc}") from exc
    if not isinstance(blob, dict):
        raise ConfigError(KEY, f"{path.name} holds no state dict")
    return blob


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights saved from a DataParallel/DDP wrapper carry a `module.` prefix."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def load_initial_weights(model: Encoder, path: str | os.PathLike[str]) -> str:
    """Load `path` into `model` (on any device); returns what was loaded, for the log."""
    path = Path(path)
    blob = _read(path)
    if "state_dict" in blob and "meta" in blob:  # an encoder file of this project
        meta = blob["meta"]
        if meta.get("backbone") != model.backbone_name or meta.get("dim") != model.dim:
            raise ConfigError(
                KEY, f"{path.name} is a {meta.get('backbone')} encoder with "
                f"{meta.get('dim')} dimensions; this run trains a {model.backbone_name} with "
                f"{model.dim}: set backbone and embedding_dim to match")
        _load(model.net, _net_state(blob["state_dict"]), path, strict=True)
        return f"encoder {path.name} ({meta['backbone']}, {meta['dim']} dimensions)"
    state = _strip_prefix({k: v for k, v in blob.items() if isinstance(v, torch.Tensor)})
    if "conv1.weight" in state and "layer4.1.bn2.weight" in state:  # torchvision ResNet-18
        if model.backbone_name != "resnet18":
            raise ConfigError(
                KEY, f"{path.name} holds torchvision ResNet-18 weights; they fit "
                f"backbone=resnet18 (this run uses {model.backbone_name})")
        trunk = {k: v for k, v in state.items() if k not in _TORCHVISION_HEAD}
        _load(model.net, trunk, path, strict=False, allowed_missing=set(_TORCHVISION_HEAD))
        return f"torchvision ResNet-18 weights {path.name} (all layers but the classifier)"
    raise ConfigError(KEY, f"{path.name} is neither an encoder of this project nor a "
                      "torchvision ResNet-18 state dict")


def _net_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An Encoder's state dict keys are `net.<layer>`; the backbone's are `<layer>`."""
    return {k[len("net."):] if k.startswith("net.") else k: v for k, v in state.items()}


def _load(net: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, *, strict: bool,
          allowed_missing: set[str] | frozenset[str] = frozenset()) -> None:
    own = net.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    unknown = [k for k in state if k not in own]
    missing = [k for k in own if k not in state and k not in allowed_missing]
    if wrong or unknown or missing:
        detail = "; ".join(part for part in (
            f"shapes differ for {', '.join(wrong[:3])}" if wrong else "",
            f"unexpected {', '.join(unknown[:3])}" if unknown else "",
            f"missing {', '.join(missing[:3])}" if missing else "") if part)
        raise ConfigError(KEY, f"{path.name} does not fit this backbone: {detail}")
    net.load_state_dict(state, strict=strict)


def resolve(init_from: str, models_root: str | os.PathLike[str] | None = None,
            files_root: str | os.PathLike[str] | None = None, *, backbone: str = "",
            download: bool = True) -> Path:
    """The weights file `init_from` names: `imagenet`, the pretrained weights of `backbone`
    (trainer.pretrained: under `files_root`, in the torch hub cache, or downloaded when
    `download` allows); a published version's encoder under `models_root`; or else a file
    (confined to `files_root` when one is given, as jobs from the API are)."""
    if init_from == pretrained.IMAGENET:
        return pretrained.weights_file(backbone, files_root, download=download)
    if models_root is not None and init_from and not init_from.startswith(".") and not any(
            c in init_from for c in "/\\\x00"):
        bundle = Path(models_root) / init_from
        if (bundle / "manifest.json").is_file():
            return bundle / "encoder.pt"
    if files_root is not None:
        root = Path(files_root).resolve()
        path = (root / init_from).resolve()
        if not path.is_relative_to(root):
            raise ConfigError(KEY, f"{init_from!r} is outside the data root")
    else:
        path = Path(init_from).expanduser()
    if not path.is_file():
        where = "a published model version or a file" + (
            " under the data root" if files_root is not None else "")
        raise ConfigError(KEY, f"{init_from!r} is not {where}")
    return path


def check(init_from: str, backbone: str, dim: int,
          models_root: str | os.PathLike[str] | None = None,
          files_root: str | os.PathLike[str] | None = None, *, download: bool = True) -> Path:
    """Refuse, before a job is queued, weights that are missing or would not load into its
    encoder; returns the file."""
    path = resolve(init_from, models_root, files_root, backbone=backbone, download=download)
    load_initial_weights(Encoder(backbone, dim), path)
    return path

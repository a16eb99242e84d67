"""Checkpoints: saved atomically and durably (trainer.files), loaded on resumption.

The file helpers are importable from here too, as they were before trainer.files held them."""

from __future__ import annotations

import os
from typing import Any

import torch

from trainer.files import atomic_file, atomic_write_json, fsync_dir, fsync_file

__all__ = ["atomic_file", "atomic_write_json", "fsync_dir", "fsync_file", "load", "save"]


def save(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    with atomic_file(path) as f:
        torch.save(state, f)


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    # Our own files hold numpy arrays and RNG states besides tensors: not weights-only.
    return torch.load(path, map_location="cpu", weights_only=False)

"""Where a dataset lives: DATA_ROOT/<name>, confined to the data root."""

from __future__ import annotations

from pathlib import Path

from state.settings import Settings
from trainer.errors import DatasetError


def dataset_path(settings: Settings, name: str) -> Path:
    """DATA_ROOT/<name>, refusing names that point outside it."""
    if not name or "\x00" in name or len(name) > 1024:
        raise DatasetError(f"dataset {name!r} does not exist")
    root = settings.data_root.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or path == root or not path.exists():
        raise DatasetError(f"dataset {name!r} does not exist")
    return path


def dataset_folder(settings: Settings, name: str) -> Path | None:
    """The folder of a dataset, where its added images go (None: no such folder dataset)."""
    try:
        path = dataset_path(settings, name)
    except DatasetError:
        return None
    return path if path.is_dir() else None

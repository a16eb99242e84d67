"""Images added to a collection: stored in its dataset, under `.items/` (a hidden folder: the
dataset scan never lists it as part of the layout)."""

from __future__ import annotations

import uuid
from pathlib import Path

from trainer.files import atomic_write_bytes

ITEMS_DIR = ".items"


def store_image(dataset_root: Path, data: bytes, suffix: str) -> str:
    """Write an added image durably into the dataset; returns its path relative to the root.
    Every add gets a file of its own, never overwritten: a replica still re-embedding an older
    entry reads the image that entry named."""
    folder = dataset_root / ITEMS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{uuid.uuid4().hex}{suffix}"
    atomic_write_bytes(folder / name, data)
    return f"{ITEMS_DIR}/{name}"


def confined(dataset_root: Path, path: str | None) -> Path | None:
    """Where an added item's image belongs: `path` (from its change-log entry) relative to the
    dataset root and inside it. None when the entry names no file, or a file outside the
    dataset (`..`, an absolute path, a symlink out): a log entry is never trusted to point
    anywhere else."""
    if not path:
        return None
    root = dataset_root.resolve()
    file = (root / path).resolve()
    return file if file.is_relative_to(root) else None


def added_image(dataset_root: Path, path: str | None) -> Path | None:
    """The image file of an added item, when it is inside the dataset and there."""
    file = confined(dataset_root, path)
    return file if file is not None and file.is_file() else None

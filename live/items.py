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

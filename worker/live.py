"""The live collection on the worker's side: what a job trains on, and what it publishes.

- A job trains on its dataset as the change log left it when the job first started: the log's
  position then (its snapshot) is kept in the run folder, so a resumed job sees the same items.
- When it publishes, the changes made while it trained (after its snapshot, up to now) are
  applied to its embeddings, added images embedded with the new encoder, and the bundle records
  the log position it covers. API replicas apply whatever came after that position.

Images added through the API live in the dataset, under `.items/` (a hidden folder: the dataset
scan never lists it as part of the layout).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from state.changes import ADD, Change, ChangeLog
from trainer.collection import Collection
from trainer.overlay import AddedItem, with_changes

log = logging.getLogger(__name__)

ITEMS_DIR = ".items"
SNAPSHOT_FILE = "changes.json"
ADDED_FILE = "added.json"  # in a bundle: id -> image path of the items taken from the log
PUBLISHED_EMBEDDINGS = "embeddings.published.npz"  # a run's embeddings with later changes


def net_changes(entries: Iterable[Change]) -> tuple[dict[str, Change], set[str]]:
    """The effect of entries applied in order: each id's last add that is still live, and the
    ids whose last change deleted them."""
    added: dict[str, Change] = {}
    deleted: set[str] = set()
    for change in entries:
        if change.op == ADD:
            added[change.id] = change
            deleted.discard(change.id)
        else:
            added.pop(change.id, None)
            deleted.add(change.id)
    return added, deleted


def store_image(dataset_root: Path, data: bytes, suffix: str) -> str:
    """Write an added image durably into the dataset; returns its path relative to the root.
    Every add gets a file of its own, never overwritten: a replica still re-embedding an older
    entry reads the image that entry named."""
    folder = dataset_root / ITEMS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{uuid.uuid4().hex}{suffix}"
    tmp = folder / f".{name}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / name)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)  # the new name survives a power loss too
    finally:
        os.close(fd)
    return f"{ITEMS_DIR}/{name}"


def snapshot_seq(run_dir: Path, changes: ChangeLog, dataset: str) -> int:
    """The log position a job trains at: taken when it first starts, the same on resumption."""
    path = run_dir / SNAPSHOT_FILE
    if path.exists():
        return int(json.loads(path.read_text())["seq"])
    seq = changes.last_seq(dataset)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"dataset": dataset, "seq": seq}))
    os.replace(tmp, path)
    return seq


def training_collection(collection: Collection, changes: ChangeLog, dataset: str,
                        dataset_root: Path, upto: int) -> Collection:
    """The dataset as the log left it at position `upto`."""
    added, deleted = net_changes(changes.changes_between(dataset, 0, upto))
    items = [AddedItem(c.id, str(dataset_root / c.path), c.label) for c in added.values()
             if c.path]
    return with_changes(collection, items, deleted)


def apply_to_embeddings(saved: dict[str, np.ndarray], entries: list[Change],
                        embed_files: Callable[[list[Path]], np.ndarray],
                        dataset_root: Path) -> dict[str, np.ndarray]:
    """A run's embeddings (the arrays of embeddings.npz) with `entries` applied: deleted and
    replaced items leave, added ones join with vectors from `embed_files`. Idempotent."""
    added, deleted = net_changes(entries)
    ids = [str(i) for i in saved["ids"]]
    gone = deleted | set(added)
    keep = np.asarray([r for r, item in enumerate(ids) if item not in gone], dtype=np.int64)
    classes = [str(c) for c in saved["classes"]]
    files, new = [], []
    for change in added.values():
        path = dataset_root / (change.path or "")
        if change.path and path.is_file():
            files.append(path)
            new.append(change)
        else:
            log.warning("added item %s: image %s is missing; left out", change.id, change.path)
    vectors = embed_files(files) if files else np.zeros((0, saved["vectors"].shape[1]),
                                                        dtype=np.float32)
    for change in new:
        if change.label is not None and change.label not in classes:
            classes.append(change.label)
    labels = [classes.index(c.label) if c.label is not None else -1 for c in new]
    return {
        "vectors": np.concatenate([saved["vectors"][keep], vectors.astype(np.float32)]),
        "ids": np.asarray([ids[r] for r in keep] + [c.id for c in new], dtype=str),
        "labels": np.concatenate([saved["labels"][keep], np.asarray(labels, dtype=np.int64)]),
        "classes": np.asarray(classes, dtype=str),
        "is_eval": np.concatenate([saved["is_eval"][keep], np.zeros(len(new), dtype=bool)]),
    }


def embed_files_with(encoder: Path, device: str = "auto",
                     precision: str = "auto") -> Callable[[list[Path]], np.ndarray]:
    """Embed image files with an encoder file, preprocessed as in training."""
    import torch

    from trainer.encoder_file import EmbeddingModel
    from trainer.images import decode_square

    model = EmbeddingModel.load(encoder, device, precision)
    size = model.meta.image_size

    def embed(paths: list[Path]) -> np.ndarray:
        out = []
        for start in range(0, len(paths), 256):
            images = [torch.from_numpy(decode_square(p.read_bytes(), size)).permute(2, 0, 1)
                      for p in paths[start:start + 256]]
            out.append(model.embed_uint8(torch.stack(images)))
        return np.concatenate(out) if out else np.zeros((0, model.meta.dim), np.float32)

    return embed


def bundle_arguments(run_dir: Path, changes: ChangeLog, dataset: str, dataset_root: Path,
                     snapshot: int, upto: int,
                     embed_files: Callable[[list[Path]], np.ndarray]) -> dict[str, Any]:
    """What write_bundle needs to publish a run with the log applied up to `upto`: the run's
    embeddings with the changes made since its `snapshot` (added images embedded by the new
    encoder), the position covered, and the images of every item the log added."""
    everything = changes.changes_between(dataset, 0, upto)
    out: dict[str, Any] = {"extra": {"changes_seq": upto}}
    after = [c for c in everything if c.seq > snapshot]
    if after:
        with np.load(run_dir / "embeddings.npz") as saved:
            arrays = apply_to_embeddings(dict(saved), after, embed_files, dataset_root)
        path = run_dir / PUBLISHED_EMBEDDINGS
        np.savez(path, **arrays)
        out["embeddings"] = path
        indexed = {str(i) for i in arrays["ids"]}
    else:
        with np.load(run_dir / "embeddings.npz") as saved:
            indexed = {str(i) for i in saved["ids"]}
    added, _ = net_changes(everything)
    out["extra_json"] = {ADDED_FILE: {i: c.path for i, c in added.items()
                                      if c.path and i in indexed}}
    return out

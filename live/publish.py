"""What a job publishes when its collection changed while it trained.

The changes made after the job's snapshot (live/collection.py), up to now, are applied to its
embeddings, added images embedded with the new encoder, and the bundle records the log position
it covers and the image of every item the log added. API replicas apply whatever came after
that position (service/live_view.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from live.items import added_image
from live.merge import merge, net_changes
from state.changes import Change, ChangeLog

log = logging.getLogger(__name__)

ADDED_FILE = "added.json"  # in a bundle: id -> image path of the items taken from the log
PUBLISHED_EMBEDDINGS = "embeddings.published.npz"  # a run's embeddings with later changes


@dataclass(frozen=True)
class PublishOptions:
    """What a bundle records beyond its run folder (arguments of trainer.bundle.write_bundle)."""

    changes_seq: int  # the change log position the bundle covers
    added_paths: dict[str, str]  # id -> image path of the indexed items the log added
    # The position the model was trained on (a retrain policy counts the changes after it).
    snapshot_seq: int = 0
    embeddings: Path | None = None  # the items to index, when not the run's own embeddings
    init_from: str | None = None  # the version (or weights file) the job started from

    @property
    def extra(self) -> dict[str, Any]:
        """Fields of the manifest."""
        return {"changes_seq": self.changes_seq, "snapshot_seq": self.snapshot_seq,
                "init_from": self.init_from}

    @property
    def extra_json(self) -> dict[str, Any]:
        """Files of the bundle, name -> JSON value."""
        return {ADDED_FILE: self.added_paths}


def apply_to_embeddings(saved: dict[str, np.ndarray], entries: list[Change],
                        embed_files: Callable[[list[Path]], np.ndarray],
                        dataset_root: Path) -> dict[str, np.ndarray]:
    """A run's embeddings (the arrays of embeddings.npz) with `entries` applied: deleted and
    replaced items leave, added ones join with vectors from `embed_files`. Idempotent."""
    added, deleted = net_changes(entries)
    files, new = [], []
    for change in added.values():
        path = added_image(dataset_root, change.path)
        if path is not None:
            files.append(path)
            new.append(change)
        else:
            log.warning("added item %s: image %s is not in the dataset; left out", change.id,
                        change.path)
    vectors = embed_files(files) if files else np.zeros((0, saved["vectors"].shape[1]),
                                                        dtype=np.float32)
    # An add whose image is missing still replaces the item it names.
    plan = merge([str(c) for c in saved["classes"]], [(c.id, c.label) for c in new],
                 deleted | set(added))
    keep = plan.kept([str(i) for i in saved["ids"]])
    return {
        "vectors": np.concatenate([saved["vectors"][keep],
                                   vectors[plan.picked].astype(np.float32)]),
        "ids": np.asarray([str(saved["ids"][r]) for r in keep] + plan.ids, dtype=str),
        "labels": np.concatenate([saved["labels"][keep], plan.labels]),
        "classes": np.asarray(plan.classes, dtype=str),
        "is_eval": np.concatenate([saved["is_eval"][keep],
                                   np.zeros(len(plan.ids), dtype=bool)]),
    }


def publish_options(run_dir: Path, changes: ChangeLog, dataset: str, dataset_root: Path,
                    snapshot: int, upto: int, embed_files: Callable[[list[Path]], np.ndarray],
                    init_from: str | None = None,
                    base_added: dict[str, str] | None = None) -> PublishOptions:
    """What publishing a run with the log applied up to `upto` records: the run's embeddings
    with the changes made since its `snapshot` (added images embedded by the new encoder), the
    position covered, and the images of every item the log added. Only the entries after the
    snapshot are read: `base_added` (id -> image) are the items the log had added by then."""
    after = changes.changes_between(dataset, snapshot, upto)
    if base_added is None:  # a run folder from before snapshots listed them
        base_added = added_images(changes.changes_between(dataset, 0, snapshot))
    embeddings = None
    with np.load(run_dir / "embeddings.npz") as saved:
        if after:
            arrays: dict[str, Any] = apply_to_embeddings(dict(saved), after, embed_files,
                                                         dataset_root)
            embeddings = run_dir / PUBLISHED_EMBEDDINGS
            np.savez(embeddings, **arrays)
            indexed = {str(i) for i in arrays["ids"]}
        else:
            indexed = {str(i) for i in saved["ids"]}
    _, deleted = net_changes(after)
    paths = {i: p for i, p in base_added.items() if i not in deleted} | added_images(after)
    return PublishOptions(changes_seq=upto, snapshot_seq=snapshot, embeddings=embeddings,
                          init_from=init_from,
                          added_paths={i: p for i, p in paths.items() if i in indexed})


def added_images(entries: list[Change]) -> dict[str, str]:
    """id -> image of the items that `entries`, applied in order, leave added."""
    added, _ = net_changes(entries)
    return {i: c.path for i, c in added.items() if c.path}

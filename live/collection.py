"""The collection a job trains on: a dataset with changes on top, items added with explicit ids
and labels (their images stored apart from the dataset's own files) and items deleted. The
dataset's files stay as they are; a training run sees the collection as the changes left it."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from live.items import confined
from live.merge import merge, net_changes
from state.changes import ChangeLog
from trainer.collection import Collection, Source
from trainer.images import InvalidImage, decode_square


@dataclass(frozen=True)
class AddedItem:
    id: str
    path: str  # the image file (absolute, or relative to the caller's working folder)
    label: str | None = None


class OverlaySource:
    """Rows below `base_rows` come from the dataset's source; the rest are added files."""

    def __init__(self, base: Source, base_rows: int, files: list[str]) -> None:
        self.base = base
        self.base_rows = base_rows
        self.files = files

    def load(self, i: int, size: int) -> np.ndarray:
        if i < self.base_rows:
            return self.base.load(i, size)
        path = self.files[i - self.base_rows]
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise InvalidImage(f"cannot read {os.path.basename(path)}: {exc}") from exc
        return decode_square(data, size)


def with_changes(collection: Collection, added: Sequence[AddedItem],
                 deleted: Iterable[str]) -> Collection:
    """`collection` without the `deleted` ids, with `added` items appended in order (the rule of
    live/merge.py). Added items are training items; new labels become classes."""
    if not added and not deleted:
        return collection
    plan = merge(collection.classes, [(item.id, item.label) for item in added], deleted)
    keep = plan.kept(collection.ids)
    base_rows = int(collection.source_index.max(initial=-1)) + 1
    source = OverlaySource(collection.source, base_rows, [added[p].path for p in plan.picked])
    return Collection(
        name=collection.name,
        ids=[collection.ids[i] for i in keep] + plan.ids,
        labels=np.concatenate([collection.labels[keep], plan.labels]),
        classes=plan.classes,
        is_eval=np.concatenate([collection.is_eval[keep], np.zeros(len(plan.ids), dtype=bool)]),
        source=source,
        ignored=collection.ignored,
        skipped=list(collection.skipped),
        source_index=np.concatenate([collection.source_index[keep],
                                     base_rows + np.arange(len(plan.ids), dtype=np.int64)]),
    )


def training_collection(collection: Collection, changes: ChangeLog, dataset: str,
                        dataset_root: Path, upto: int) -> Collection:
    """The dataset as the log left it at position `upto`."""
    added, deleted = net_changes(changes.changes_between(dataset, 0, upto))
    # An image that went missing is the loader's to report (on_corrupt); one outside the
    # dataset is never read.
    files = {c.id: confined(dataset_root, c.path) for c in added.values()}
    items = [AddedItem(c.id, str(files[c.id]), c.label) for c in added.values()
             if files[c.id] is not None]
    return with_changes(collection, items, deleted)

"""A collection with changes on top: items added with explicit ids and labels (their images
stored apart from the dataset's own files), and items deleted. The dataset's files stay as they
are; a training run sees the collection as the changes left it."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

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
    """`collection` without the `deleted` ids, with `added` items appended in order (an added
    id that exists replaces it). Added items are training items; new labels become classes."""
    if not added and not deleted:
        return collection
    added = list({item.id: item for item in added}.values())  # the last add of an id wins
    gone = set(deleted) | {item.id for item in added}
    keep = np.asarray([i for i, item in enumerate(collection.ids) if item not in gone],
                      dtype=np.int64)
    classes = list(collection.classes)
    for item in added:
        if item.label is not None and item.label not in classes:
            classes.append(item.label)
    index = {c: i for i, c in enumerate(classes)}
    base_rows = int(collection.source_index.max(initial=-1)) + 1
    source = OverlaySource(collection.source, base_rows, [item.path for item in added])
    return Collection(
        name=collection.name,
        ids=[collection.ids[i] for i in keep] + [item.id for item in added],
        labels=np.concatenate([collection.labels[keep], np.asarray(
            [index[item.label] if item.label is not None else -1 for item in added],
            dtype=np.int64)]),
        classes=classes,
        is_eval=np.concatenate([collection.is_eval[keep], np.zeros(len(added), dtype=bool)]),
        source=source,
        ignored=collection.ignored,
        skipped=list(collection.skipped),
        source_index=np.concatenate([collection.source_index[keep],
                                     base_rows + np.arange(len(added), dtype=np.int64)]),
    )

"""A dataset as training, evaluation and bundles see it: ids, labels, evaluation split, and the
source its images are read from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from trainer.errors import DatasetError

TRAIN_SPLIT = "train"
TRAIN_SPLITS = frozenset({TRAIN_SPLIT, "training"})
EVAL_SPLITS = frozenset({"test", "testing", "val", "valid", "validation"})
MIN_TRAIN_IMAGES = 10


def split_of(folder: str) -> str | None:
    """The split a top folder names, in any case ("Train/", "TEST/", "Validation/"): "train"
    for a training split, an evaluation split's own name in lower case, None for any other
    folder (a class, say)."""
    name = folder.lower()
    if name in TRAIN_SPLITS:
        return TRAIN_SPLIT
    return name if name in EVAL_SPLITS else None


class Source(Protocol):
    """Reads item i as a square uint8 RGB array; must be usable from forked processes."""

    def load(self, i: int, size: int) -> np.ndarray: ...


@dataclass
class Collection:
    """What a training run, an evaluation or a bundle needs to know about a dataset."""

    name: str
    ids: list[str]
    labels: np.ndarray  # int64, -1 where unknown
    classes: list[str]
    is_eval: np.ndarray  # bool: in an evaluation split, never trained on
    source: Source
    ignored: list[str] = field(default_factory=list)  # non-image files, for the report
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, why) corrupt images
    # Why images in folders carry no label, where some do not sit in a folder: said, since a
    # layout of class folders plus a few loose files would otherwise lose its labels silently.
    layout_note: str | None = None
    # Row of `source` behind each item: the identity until corrupt items are dropped.
    source_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        if len(self.source_index) != len(self.ids):
            self.source_index = np.arange(len(self.ids), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def train_indices(self) -> np.ndarray:
        return np.flatnonzero(~self.is_eval)

    @property
    def eval_indices(self) -> np.ndarray:
        return np.flatnonzero(self.is_eval)

    @property
    def has_labels(self) -> bool:
        return bool((self.labels >= 0).any())

    @property
    def has_labelled_eval(self) -> bool:
        return bool((self.labels[self.is_eval] >= 0).any())

    def load(self, i: int, size: int) -> np.ndarray:
        return self.source.load(int(self.source_index[i]), size)

    def subset(self, keep: np.ndarray, skipped: Sequence[tuple[str, str]] = ()) -> Collection:
        keep = np.asarray(keep)
        return Collection(
            name=self.name,
            ids=[self.ids[i] for i in keep],
            labels=self.labels[keep],
            classes=self.classes,
            is_eval=self.is_eval[keep],
            source=self.source,
            ignored=self.ignored,
            skipped=[*self.skipped, *skipped],
            source_index=self.source_index[keep],
        )

    def summary(self) -> dict:
        """Counts for reports and the API: items, classes, split sizes."""
        splits: dict[str, int] = {}
        for item_id, ev in zip(self.ids, self.is_eval, strict=True):
            top = item_id.split("/", 1)[0]
            key = split_of(top) or ("eval" if ev else TRAIN_SPLIT)
            splits[key] = splits.get(key, 0) + 1
        counts = np.bincount(self.labels[self.labels >= 0], minlength=len(self.classes))
        return {
            "items": len(self),
            "train_items": int((~self.is_eval).sum()),
            "eval_items": int(self.is_eval.sum()),
            "labelled": bool(self.has_labels),
            "classes": list(self.classes),
            "class_counts": {c: int(n) for c, n in zip(self.classes, counts, strict=True)},
            "splits": splits,
            "ignored_files": len(self.ignored),
            "skipped": [{"id": i, "reason": r} for i, r in self.skipped],
            "layout_note": self.layout_note,
        }

    def check_trainable(self) -> None:
        """Refuse, before any training, datasets that cannot give a meaningful run."""
        n_train = int((~self.is_eval).sum())
        if len(self) == 0:
            raise DatasetError(f"dataset {self.name!r} holds no readable images")
        if n_train < MIN_TRAIN_IMAGES:
            raise DatasetError(
                f"dataset {self.name!r} has {n_train} training images; at least "
                f"{MIN_TRAIN_IMAGES} are needed"
            )

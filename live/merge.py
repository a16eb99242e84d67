"""The one rule for changing a collection: removed ids leave, new items are appended in order,
and labels the collection has not seen become new classes (appended in order of first use).

Three places apply it: the collection a job trains on (live/collection.py), the embeddings a job
publishes (live/publish.py) and each served version's index (live/index.py). They differ in
what they carry per item (image files, vectors, index rows), never in which items stay, which
join and which class each one gets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from state.changes import ADD, Change


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


@dataclass(frozen=True)
class Merge:
    """What changes do to a collection, whatever it carries per item."""

    gone: frozenset[str]  # ids that leave: deleted, or replaced by an appended item
    picked: list[int]  # positions in the `added` given to merge() of the items appended
    ids: list[str]  # the appended items, in order
    labels: np.ndarray  # int64: their class index, -1 for none
    classes: list[str]  # the collection's classes, then the new ones

    def kept(self, ids: Sequence[str]) -> np.ndarray:
        """Rows of a collection's `ids` that stay, in order."""
        return np.asarray([r for r, item in enumerate(ids) if item not in self.gone],
                          dtype=np.int64)


def merge(classes: Sequence[str], added: Sequence[tuple[str, str | None]],
          deleted: Iterable[str]) -> Merge:
    """The collection with classes `classes` after `deleted` ids leave and `added` (id, label)
    pairs are appended in order. An appended id that exists replaces it; an id added twice is
    appended once, where it first appears, with its last label."""
    last = {item: pos for pos, (item, _) in enumerate(added)}  # the last add of an id wins
    picked = [last[item] for item in dict.fromkeys(item for item, _ in added)]
    out = list(classes)
    index = {c: i for i, c in enumerate(out)}
    labels = []
    for pos in picked:
        label = added[pos][1]
        if label is not None and label not in index:
            index[label] = len(out)
            out.append(label)
        labels.append(-1 if label is None else index[label])
    ids = [added[pos][0] for pos in picked]
    return Merge(gone=frozenset(deleted) | frozenset(ids), picked=picked, ids=ids,
                 labels=np.asarray(labels, dtype=np.int64), classes=out)

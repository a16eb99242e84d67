"""Near-duplicates in a live collection: pairs of items whose cosine passes a threshold, and
the existing items a new image duplicates.

Pairs are found through the index rather than by comparing every pair (a million items would be
5e11 products): each live item, base and added alike, asks the index for its `neighbours`
nearest others, in batches, and every hit at or above the threshold is a pair. A pair is found
from both ends and kept once, (a, b) == (b, a), with a < b. An item with more than `neighbours`
others above the threshold can lose some of its pairs (those not also found from the other
end): such items are counted in `crowded`, so an answer says when it may be short.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from live.index import LiveIndex

NEIGHBOURS = 10  # asked of the index per item; an item with more duplicates is `crowded`
BATCH = 1024  # items searched at once: BLAS-sized batches, bounded memory
# The listing searches HNSW/IVF this many times wider than the tuned breadth: on a million
# items with planted copies, recall of the pairs went from 0.977 to 0.997 for 1.8x the time
# (61 s -> 112 s, docs/benchmarks.md). A listing is made once per version and kept.
WIDEN = 4


@dataclass
class Pairs:
    """Pairs above `threshold`, the most similar first: `ids[a[i]]` and `ids[b[i]]` with
    cosine `cosine[i]`."""

    ids: list[str]
    a: np.ndarray  # int64 positions into ids
    b: np.ndarray
    cosine: np.ndarray  # float32, descending
    threshold: float
    neighbours: int
    items: int  # live items searched
    crowded: int  # items whose every neighbour asked for passed the threshold

    def above(self, threshold: float) -> int:
        """How many pairs have a cosine of at least `threshold` (>= self.threshold)."""
        return int(np.searchsorted(-self.cosine, -np.float32(threshold), side="right"))


def live_items(index: LiveIndex, page: int = 100_000) -> list[str]:
    """Every live item's id, in index order."""
    ids: list[str] = []
    while True:
        rows, total = index.items(offset=len(ids), limit=page)
        ids.extend(item for item, _ in rows)
        if not rows or len(ids) >= total:
            return ids


def find_pairs(index: LiveIndex, threshold: float, neighbours: int = NEIGHBOURS,
               batch: int = BATCH, breadth: int | None = None) -> Pairs:
    """The pairs of live items with a cosine of at least `threshold`; see the module
    docstring. `breadth`: the index's search breadth (efSearch, nprobe; None: WIDEN times its
    tuned one). Blocking (seconds per 100,000 items): run it off the event loop."""
    if breadth is None:
        tuned = index.describe()["params"]
        breadth = WIDEN * next(iter(tuned.values())) if tuned else None
    ids = live_items(index)
    position = {item: i for i, item in enumerate(ids)}
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    crowded = 0
    k = min(neighbours, max(0, len(ids) - 1))
    for start in range(0, len(ids) if k else 0, batch):
        chunk = ids[start:start + batch]
        found = [index.vector(item) for item in chunk]
        # An item deleted since the id list was read has no vector: it is left out.
        kept = [(item, v) for item, v in zip(chunk, found, strict=True) if v is not None]
        if not kept:
            continue
        hits = index.search(np.stack([v for _, v in kept]), k, exclude=[i for i, _ in kept],
                            breadth=breadth)
        for (item, _), hit_ids, hit_scores in zip(kept, hits.ids, hits.scores, strict=True):
            passing = hit_scores >= threshold
            count = int(passing.sum())
            if count == 0:
                continue
            if count == k:
                crowded += 1
            me = position[item]
            others = np.fromiter((position.get(h, -1) for h, ok in zip(hit_ids, passing,
                                                                       strict=True) if ok),
                                 dtype=np.int64, count=count)
            known = others >= 0  # an item added since the id list was read is left out
            others = others[known]
            firsts.append(np.minimum(me, others))
            seconds.append(np.maximum(me, others))
            scores.append(hit_scores[passing][known])
    return _unique(ids, firsts, seconds, scores, threshold, k, crowded)


def _unique(ids: list[str], firsts: list[np.ndarray], seconds: list[np.ndarray],
            scores: list[np.ndarray], threshold: float, k: int, crowded: int) -> Pairs:
    if not firsts:
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(ids, empty, empty, np.zeros(0, dtype=np.float32), threshold, k, len(ids),
                     crowded)
    a, b = np.concatenate(firsts), np.concatenate(seconds)
    cosine = np.concatenate(scores).astype(np.float32)
    # One row per pair: the two ends' scores differ only by rounding; the higher is kept.
    order = np.lexsort((-cosine, b, a))
    a, b, cosine = a[order], b[order], cosine[order]
    first = np.ones(len(a), dtype=bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    a, b, cosine = a[first], b[first], cosine[first]
    by_score = np.lexsort((b, a, -cosine))
    return Pairs(ids, a[by_score], b[by_score], cosine[by_score], threshold, k, len(ids),
                 crowded)


@dataclass
class Match:
    id: str
    cosine: float


def matches(index: LiveIndex, vectors: np.ndarray, threshold: float, shown: int,
            skip: Sequence[str] = (), batch: int = 256) -> list[list[Match]]:
    """Per vector (unit, Q x D): the live items with a cosine of at least `threshold`, the
    most similar first, at most `shown` of them; the ids in `skip` (the request's own, which
    a replayed or replacing request finds in the index) are never listed."""
    skipped = set(skip)
    extra = sum(1 for item in skipped if item in index)  # they may take places in the top k
    out: list[list[Match]] = []
    for start in range(0, len(vectors), batch):
        hits = index.search(vectors[start:start + batch], shown + extra)
        for hit_ids, hit_scores in zip(hits.ids, hits.scores, strict=True):
            found = [Match(item, float(score)) for item, score in zip(hit_ids, hit_scores,
                                                                      strict=True)
                     if score >= threshold and item not in skipped]
            out.append(found[:shown])
    return out

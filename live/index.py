"""A published index that stays live: items added and deleted after it was built.

A bundle's FAISS index is immutable (and FAISS indexes are not safe to modify while other
threads search them). Changes are therefore kept beside it, the way log-structured stores do:

    base     the bundle's index and vectors, never modified; deleted rows are cleared in an
             "alive" bitmap that every search passes to FAISS as an ID selector, so exact, IVF
             and HNSW indexes all filter them out inside the search itself
    delta    added items, searched exactly (a matrix product over a growing array)

A search merges the two; a filter (labels, an id prefix: live/filters.py) narrows both, inside
the search. Once deletions or additions pass a share of the base
(`REBUILD_DELETED_SHARE`, `REBUILD_ADDED_SHARE`), `rebuilt()` builds a new base from the live
items (the index kind chosen again by size, recall@10 measured again) and swaps it in, replaying
the changes that arrived while it was built.

Readers never take a lock. Writers are serialised by one lock; an add writes its rows beyond the
published count and only then raises the count, and an array that must grow is copied and
replaced, never resized in place, so a reader always sees whole rows. Row numbers change with a
rebuild: callers use `search()`'s ids, never rows across calls.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import faiss
import numpy as np

from live import bitmaps
from live.filters import ANY, ItemFilter, complete, search_rows
from live.growing import Growing
from live.merge import merge
from trainer import index as faiss_index

REBUILD_DELETED_SHARE = 0.10  # tombstones make filtered HNSW/IVF searches wider and slower
REBUILD_ADDED_SHARE = 0.25  # exact search over the delta grows linearly
REBUILD_MIN_CHANGES = 50  # a tiny collection is not rebuilt for every change


@dataclass
class Hits:
    """Per query: item ids, cosine scores (descending) and label indices (-1: none)."""

    ids: list[list[str]]
    scores: list[np.ndarray]
    labels: list[np.ndarray]


@dataclass
class _State:
    """One base index with the changes made on top of it."""

    base: faiss_index.SearchIndex
    base_vectors: np.ndarray  # N x D
    base_ids: list[str]
    base_labels: np.ndarray  # N, int64 class index or -1
    alive_bits: np.ndarray  # packed little-endian bitmap over base rows
    voter_bits: np.ndarray  # alive and labelled
    deleted: int = 0
    delta_vectors: Growing = field(default_factory=lambda: Growing((0,), np.float32))
    delta_labels: Growing = field(default_factory=lambda: Growing((), np.int64))
    delta_alive: Growing = field(default_factory=lambda: Growing((), np.bool_))
    delta_ids: list[str] = field(default_factory=list)
    row_of: dict[str, int] = field(default_factory=dict)  # live items only
    _sorted: tuple[np.ndarray, list[str]] | None = None  # base ids in order, for prefixes

    def __post_init__(self) -> None:
        n = len(self.base_ids)
        # Selectors point into the bitmaps: both arrays live exactly as long as this state.
        self.alive_selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(self.alive_bits))
        self.voter_selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(self.voter_bits))

    @property
    def base_rows(self) -> int:
        return len(self.base_ids)

    def prefix_mask(self, prefix: str) -> np.ndarray:
        """Base rows whose id starts with `prefix`, by binary search in the ids sorted once per
        state (a second for a million ids, then microseconds)."""
        if self._sorted is None:
            order = np.asarray(sorted(range(self.base_rows), key=self.base_ids.__getitem__),
                               dtype=np.int64)
            self._sorted = (order, [self.base_ids[i] for i in order])
        order, ids = self._sorted
        lo = bisect.bisect_left(ids, prefix)
        hi = bisect.bisect_left(ids, prefix + "\U0010ffff", lo)
        mask = np.zeros(self.base_rows, dtype=bool)
        mask[order[lo:hi]] = True
        return mask

    def id_of(self, row: int) -> str:
        n = self.base_rows
        return self.base_ids[row] if row < n else self.delta_ids[row - n]

    def label_of(self, row: int) -> int:
        n = self.base_rows
        return int(self.base_labels[row] if row < n else self.delta_labels.data[row - n])


class LiveIndex:
    """Search, add and delete over a published collection; see the module docstring."""

    def __init__(self, base: faiss_index.SearchIndex, vectors: np.ndarray, ids: Sequence[str],
                 labels: np.ndarray, classes: Sequence[str]) -> None:
        self.classes = list(classes)
        self._lock = threading.Lock()
        self._state = self._new_state(base, np.ascontiguousarray(vectors, dtype=np.float32),
                                      list(ids), np.asarray(labels, dtype=np.int64))
        self._journal: list[tuple[str, Any]] | None = None  # changes made during a rebuild
        self.rebuilds = 0
        self.last_rebuild_s: float | None = None

    @staticmethod
    def _new_state(base: faiss_index.SearchIndex, vectors: np.ndarray, ids: list[str],
                   labels: np.ndarray) -> _State:
        alive = np.ones(len(ids), dtype=bool)
        state = _State(base=base, base_vectors=vectors, base_ids=ids, base_labels=labels,
                       alive_bits=bitmaps.pack(alive), voter_bits=bitmaps.pack(labels >= 0),
                       delta_vectors=Growing((vectors.shape[1],), np.float32))
        state.row_of = {item: row for row, item in enumerate(ids)}
        return state

    # --- reading --------------------------------------------------------------------------
    @property
    def grown_bytes(self) -> int:
        """Memory held beyond the published bundle's vectors and index: the added rows (the
        buffer's unwritten tail is not counted: untouched zeroed pages take no memory) and,
        once rebuilt, the rebuilt base (the bundle's own arrays stay loaded)."""
        s = self._state
        grown = s.delta_vectors.count * self.dim * 4
        if self.rebuilds:
            grown += int(s.base_vectors.nbytes) + s.base.memory_bytes()
        return grown

    @property
    def dim(self) -> int:
        return int(self._state.base_vectors.shape[1])

    def __len__(self) -> int:
        return len(self._state.row_of)

    def __contains__(self, item: str) -> bool:
        return item in self._state.row_of

    @property
    def kind(self) -> str:
        return self._state.base.kind

    def describe(self) -> dict[str, Any]:
        s = self._state
        return {**s.base.describe(), "live_items": len(s.row_of), "base_items": s.base_rows,
                "deleted_base_items": s.deleted, "added_items": s.delta_alive.count,
                "rebuilds": self.rebuilds}

    def vector(self, item: str) -> np.ndarray | None:
        s = self._state
        row = s.row_of.get(item)
        if row is None:
            return None
        n = s.base_rows
        return s.base_vectors[row] if row < n else s.delta_vectors.data[row - n]

    def label(self, item: str) -> int | None:
        """The item's class index (-1 when unlabelled), None when it is not in the index."""
        s = self._state
        row = s.row_of.get(item)
        return None if row is None else s.label_of(row)

    def items(self, offset: int = 0, limit: int = 100,
              only: ItemFilter = ANY) -> tuple[list[tuple[str, int]], int]:
        """(id, label index) of live items in index order that match `only`, and how many
        match."""
        s = self._state
        base, delta = self._usable(s, False, only)
        rows = np.concatenate([np.flatnonzero(base), s.base_rows + np.flatnonzero(delta)])
        page = rows[offset:offset + limit]
        return [(s.id_of(int(r)), s.label_of(int(r))) for r in page], len(rows)

    def _usable(self, s: _State, voters_only: bool,
                only: ItemFilter) -> tuple[np.ndarray, np.ndarray]:
        """Base and delta rows that are alive, labelled if `voters_only`, and match `only`."""
        m = s.delta_alive.count  # first: the rows below it are complete everywhere
        bits = s.voter_bits if voters_only else s.alive_bits
        base = bitmaps.unpack(bits, s.base_rows)
        delta = s.delta_alive.data[:m].copy()
        labels = s.delta_labels.data[:m]
        if voters_only:
            delta &= labels >= 0
        if only:
            base &= only.keep(self.classes, s.base_labels, s.base_ids, s.prefix_mask)
            delta &= only.keep(self.classes, labels, s.delta_ids[:m])
        return base, delta

    def voter_count(self, only: ItemFilter = ANY) -> int:
        """Live items with a label (those that vote in weighted kNN) that match `only`."""
        base, delta = self._usable(self._state, True, only)
        return int(base.sum() + delta.sum())

    def search(self, queries: np.ndarray, k: int, *, exclude: Sequence[str | None] | None = None,
               voters_only: bool = False, breadth: int | None = None,
               only: ItemFilter = ANY) -> Hits:
        """The k most similar live items per query (unit vectors, Q x D). `exclude[i]` is left
        out of query i's answer; `voters_only` searches labelled items only, `only` the items
        it matches (inside the search: k hits whenever k items match, see live/filters.py)."""
        s = self._state  # one state for the whole search: rows stay meaningful
        q = np.ascontiguousarray(queries, dtype=np.float32)
        want = k + (1 if exclude is not None else 0)
        usable = None
        if only:
            mask, usable = self._usable(s, voters_only, only)
            base_scores, base_rows = search_rows(s.base, s.base_vectors, mask, q, want, breadth)
        else:
            base_scores, base_rows = self._search_base(s, q, want, voters_only, breadth)
        delta_scores, delta_rows = self._search_delta(s, q, want, voters_only, usable)
        scores = np.concatenate([base_scores, delta_scores], axis=1)
        rows = np.concatenate([base_rows, delta_rows], axis=1)
        out = Hits([], [], [])
        for qi in range(q.shape[0]):
            order = np.argsort(-scores[qi], kind="stable")
            ids, kept_scores, labels = [], [], []
            for j in order:
                row = int(rows[qi, j])
                if row < 0:
                    continue
                item = s.id_of(row)
                if exclude is not None and item == exclude[qi]:
                    continue
                ids.append(item)
                kept_scores.append(scores[qi, j])
                labels.append(s.label_of(row))
                if len(ids) == k:
                    break
            out.ids.append(ids)
            out.scores.append(np.asarray(kept_scores, dtype=np.float32))
            out.labels.append(np.asarray(labels, dtype=np.int64))
        return out

    @staticmethod
    def _search_base(s: _State, q: np.ndarray, k: int, voters_only: bool,
                     breadth: int | None) -> tuple[np.ndarray, np.ndarray]:
        if s.base_rows == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        selector = s.voter_selector if voters_only else s.alive_selector
        filtered = voters_only or s.deleted > 0
        scores, rows = s.base.search(q, k, breadth, selector if filtered else None)
        if filtered and s.base.kind != "flat":  # HNSW/IVF can come back short of k
            complete(s.base_vectors, s.voter_bits if voters_only else s.alive_bits, q, scores,
                     rows, k)
        return scores, rows

    @staticmethod
    def _search_delta(s: _State, q: np.ndarray, k: int, voters_only: bool,
                      usable: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        # The alive flags are appended last: rows below their count are complete everywhere.
        m = s.delta_alive.count if usable is None else len(usable)
        if m == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        vectors = s.delta_vectors.data[:m]
        if usable is None:
            usable = s.delta_alive.data[:m] & ((s.delta_labels.data[:m] >= 0) | (not voters_only))
        sims = q @ vectors.T
        sims[:, ~usable] = -np.inf
        kk = min(k, m)
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        top_scores = np.take_along_axis(sims, top, axis=1)
        rows = np.where(np.isfinite(top_scores), top + s.base_rows, -1)
        return top_scores.astype(np.float32), rows

    # --- writing --------------------------------------------------------------------------
    def apply(self, added: Sequence[tuple[str, str | None]], vectors: np.ndarray,
              deleted: Iterable[str] = ()) -> None:
        """The rule of live/merge.py: `deleted` ids leave, `added` (id, label) pairs join with
        their `vectors` (an id present is replaced), new labels become classes."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(added), self.dim)
        with self._lock:
            plan = merge(self.classes, added, deleted)
            # Extended in place, before any row names a new class: readers never take the lock.
            self.classes.extend(plan.classes[len(self.classes):])
            gone, rows = list(plan.gone), vectors[plan.picked]
            self._apply_delete(self._state, gone)
            self._apply_upsert(self._state, plan.ids, rows, plan.labels)
            if self._journal is not None:
                self._journal.append(("delete", gone))
                self._journal.append(("upsert", (plan.ids, rows, plan.labels)))

    def upsert(self, ids: Sequence[str], vectors: np.ndarray,
               labels: Sequence[str | None]) -> None:
        """Add items; an id already present is replaced (its old row is deleted)."""
        self.apply(list(zip(ids, labels, strict=True)), vectors)

    def delete(self, ids: Sequence[str]) -> list[str]:
        """Delete items; returns the ids that were present."""
        with self._lock:
            gone = self._apply_delete(self._state, ids)
            if self._journal is not None:
                self._journal.append(("delete", list(ids)))
            return gone

    @staticmethod
    def _apply_upsert(s: _State, ids: list[str], vectors: np.ndarray,
                      labels: np.ndarray) -> None:
        LiveIndex._apply_delete(s, [i for i in ids if i in s.row_of])
        first = s.base_rows + s.delta_alive.count
        s.delta_ids.extend(ids)  # before the count moves: readers map rows below the count
        s.delta_vectors.append(vectors)
        s.delta_labels.append(labels)
        s.delta_alive.append(np.ones(len(ids), dtype=bool))
        for offset, item in enumerate(ids):
            s.row_of[item] = first + offset

    @staticmethod
    def _apply_delete(s: _State, ids: Sequence[str]) -> list[str]:
        gone = []
        for item in ids:
            row = s.row_of.pop(item, None)
            if row is None:
                continue
            gone.append(item)
            if row < s.base_rows:
                bitmaps.clear(s.alive_bits, row)
                bitmaps.clear(s.voter_bits, row)
                s.deleted += 1
            else:
                s.delta_alive.data[row - s.base_rows] = False
        return gone

    # --- compaction -----------------------------------------------------------------------
    def rebuild_due(self) -> bool:
        s = self._state
        changes = s.deleted + s.delta_alive.count
        if changes < REBUILD_MIN_CHANGES:
            return False
        base = max(1, s.base_rows)
        return (s.deleted / base > REBUILD_DELETED_SHARE
                or s.delta_alive.count / base > REBUILD_ADDED_SHARE)

    def rebuild(self, kind: str = "auto",
                build: Callable[[np.ndarray, str], faiss_index.SearchIndex] = faiss_index.build,
                ) -> None:
        """Build a new base from the live items (with `build`, the index kind chosen by size
        unless `kind` names one) and swap it in. Searches and writes go on meanwhile; writes
        made during the build are replayed on the new base before the swap."""
        started = time.perf_counter()
        with self._lock:
            s = self._state
            ids = list(s.row_of)
            rows = np.fromiter(s.row_of.values(), dtype=np.int64, count=len(ids))
            self._journal = []
        try:
            n = s.base_rows
            delta_vectors = s.delta_vectors.data
            vectors = np.empty((len(ids), self.dim), dtype=np.float32)
            is_base = rows < n
            vectors[is_base] = s.base_vectors[rows[is_base]]
            vectors[~is_base] = delta_vectors[rows[~is_base] - n]
            labels = np.asarray([s.label_of(int(r)) for r in rows], dtype=np.int64)
            built = build(vectors, kind)
            fresh = self._new_state(built, vectors, ids, labels)
        except BaseException:
            with self._lock:
                self._journal = None
            raise
        with self._lock:
            for op, args in self._journal:
                if op == "upsert":
                    self._apply_upsert(fresh, *args)
                else:
                    self._apply_delete(fresh, args)
            self._journal = None
            self._state = fresh
            self.rebuilds += 1
        self.last_rebuild_s = time.perf_counter() - started

    def recall_at_10(self, n_queries: int = faiss_index.RECALL_QUERIES, seed: int = 0,
                     breadth: int | None = None) -> float:
        """Recall@10 of `search` against exact search over the live items, with live items as
        queries (each one's own entry left out of both answers)."""
        s = self._state
        ids = list(s.row_of)
        if len(ids) < 2:
            return 1.0
        exact = np.stack(cast(list[np.ndarray], [self.vector(i) for i in ids])).astype(np.float32)
        rng = np.random.default_rng(seed)
        picks = rng.choice(len(ids), size=min(len(ids), n_queries), replace=False)
        k = min(10, len(ids) - 1)
        truth_scores = exact[picks] @ exact.T
        truth_scores[np.arange(len(picks)), picks] = -np.inf
        truth = np.argsort(-truth_scores, axis=1)[:, :k]
        found = self.search(exact[picks], k, exclude=[ids[p] for p in picks], breadth=breadth)
        hits = sum(len({ids[t] for t in truth[i]} & set(found.ids[i])) for i in range(len(picks)))
        return hits / (len(picks) * k)

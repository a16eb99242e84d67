"""Filtered search in the live index: labels and id prefixes, inside the search, on every index
kind and both paths of live/filters.py (exact over the matching rows, the index with an ID
selector), with added and deleted items; k hits whenever k items match."""

import numpy as np
import pytest

from live import filters
from live.filters import ItemFilter
from live.index import LiveIndex
from trainer import index as faiss_index


def _unit(angles_deg):
    a = np.radians(np.asarray(angles_deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def _clock(kind):
    """36 items at 0, 10, ..., 350 degrees: item i is even/ii or odd/ii by its parity, of class
    x, y or z by i mod 3."""
    vectors = _unit(10 * np.arange(36))
    ids = [f"{'odd' if i % 2 else 'even'}/{i:02d}" for i in range(36)]
    return LiveIndex(faiss_index.build(vectors, kind), vectors, ids, np.arange(36) % 3,
                     ["x", "y", "z"])


@pytest.fixture(params=[0, filters.EXACT_ROWS], ids=["index", "exact"])
def path(request, monkeypatch):
    """Both paths of the rule: with EXACT_ROWS 0 every filter goes through the index."""
    monkeypatch.setattr(filters, "EXACT_ROWS", request.param)
    monkeypatch.setattr(filters, "MIN_SHARE", 0.0 if request.param == 0 else filters.MIN_SHARE)
    return request.param


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_filters_by_hand(kind, path):
    live = _clock(kind)
    q = _unit([3])
    # Class y is i = 1, 4, 7, ...: 10 degrees (7 away), 340 (23), 40 (37).
    assert live.search(q, 3, only=ItemFilter(("y",))).ids == [["odd/01", "even/34", "even/04"]]
    # Even ones of class y: 340 (23 away), 40 (37), 280 (83).
    even_y = ItemFilter(("y",), "even/")
    assert live.search(q, 3, only=even_y).ids == [["even/34", "even/04", "even/28"]]
    # Several classes: any of them; a class the collection lacks matches nothing.
    assert live.search(q, 3, only=ItemFilter(("nope", "x"))).ids == [
        ["even/00", "odd/03", "odd/33"]]
    assert live.search(q, 3, only=ItemFilter(("nope",))).ids == [[]]
    assert live.search(q, 3, only=ItemFilter(prefix="none/")).ids == [[]]
    # Fewer matching items than k: all of them.
    assert live.search(q, 10, only=ItemFilter(("x",), "even/0")).ids == [
        ["even/00", "even/06"]]
    # The item itself left out (as /neighbours does), still k hits.
    assert live.search(_unit([10]), 2, exclude=["odd/01"], only=ItemFilter(("y",))).ids == [
        ["even/04", "even/34"]]
    items, count = live.items(0, 100, even_y)
    assert count == 6 and [i for i, _ in items] == ["even/04", "even/10", "even/16", "even/22",
                                                    "even/28", "even/34"]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_added_and_deleted_items_obey_the_filter(kind, path):
    live = _clock(kind)
    q = _unit([3])
    y = ItemFilter(("y",))
    live.delete(["odd/01"])
    assert live.search(q, 3, only=y).ids == [["even/34", "even/04", "odd/31"]]
    # Added: one of class y nearer than any, one of class z nearer still, one of a new class.
    live.upsert(["odd/99", "even/98", "new/1"], _unit([5, 4, 1]), ["y", "z", "w"])
    assert live.search(q, 2, only=y).ids == [["odd/99", "even/34"]]
    assert live.search(q, 2, only=ItemFilter(("y",), "even/")).ids == [["even/34", "even/04"]]
    assert live.search(q, 5, only=ItemFilter(("w",))).ids == [["new/1"]]
    assert live.search(q, 2, only=ItemFilter(prefix="even/9")).ids == [["even/98"]]
    # A replaced item moves to its new class; a deleted added item is gone.
    live.upsert(["even/00"], _unit([2]), ["y"])
    assert live.search(q, 2, only=y).ids == [["even/00", "odd/99"]]
    assert "even/00" not in live.search(q, 5, only=ItemFilter(("x",))).ids[0]
    live.delete(["odd/99", "new/1"])
    assert live.search(q, 2, only=y).ids == [["even/00", "even/34"]]
    assert live.search(q, 5, only=ItemFilter(("w",))).ids == [[]]


def test_voters_only_with_a_filter():
    vectors = _unit([0, 10, 20, 30])
    live = LiveIndex(faiss_index.build(vectors, "flat"), vectors, ["a/0", "a/1", "b/2", "b/3"],
                     np.array([0, -1, 1, 0]), ["x", "y"])
    live.upsert(["a/4"], _unit([1]), [None])
    a = ItemFilter(prefix="a/")
    # Unlabelled items (a/1, a/4) match a prefix but never vote.
    assert live.search(_unit([0]), 3, only=a).ids == [["a/0", "a/4", "a/1"]]
    assert live.search(_unit([0]), 3, voters_only=True, only=a).ids == [["a/0"]]
    assert live.voter_count(a) == 1 and live.voter_count(ItemFilter(("y",))) == 1
    assert live.voter_count(ItemFilter(("nope",))) == 0 and live.voter_count() == 3


def _clustered(n, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim))
    x = centres[rng.integers(0, 50, n)] + 0.3 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_k_hits_whenever_k_items_match(kind, monkeypatch):
    """Through the index with a 1 % filter: where the widened search comes back short, the
    query is answered exactly; every answer is the exact filtered one or close to it."""
    monkeypatch.setattr(filters, "EXACT_ROWS", 0)
    monkeypatch.setattr(filters, "MIN_SHARE", 0.0)
    x = _clustered(4000)
    labels = np.random.default_rng(1).integers(0, 100, len(x))
    live = LiveIndex(faiss_index.build(x, kind), x, [f"i/{i}" for i in range(len(x))], labels,
                     [f"c{i}" for i in range(100)])
    matched = np.flatnonzero(labels == 7)
    queries = _clustered(50, seed=2)
    k = 20
    assert len(matched) >= k
    found = live.search(queries, k, only=ItemFilter(("c7",)))
    truth = matched[np.argsort(-(queries @ x[matched].T), axis=1)[:, :k]]
    assert all(len(ids) == k for ids in found.ids)
    hits = sum(len({f"i/{t}" for t in row} & set(ids))
               for row, ids in zip(truth, found.ids, strict=True))
    assert hits / truth.size >= 0.9
    assert all(labels[int(i[2:])] == 7 for ids in found.ids for i in ids)


def test_the_rule_picks_exact_search_for_few_matching_rows(monkeypatch):
    """Few matching rows (or a small share): exact, never the index; many: the index."""
    x = _clustered(400)
    built = faiss_index.build(x, "hnsw")
    calls = []
    original = built.search
    monkeypatch.setattr(built, "search", lambda *a, **kw: calls.append(a) or original(*a, **kw))
    few = np.zeros(len(x), dtype=bool)
    few[:5] = True
    scores, rows = filters.search_rows(built, x, few, x[:2], 3)
    assert calls == [] and rows.shape == (2, 3) and set(rows.ravel()) <= set(range(5))
    monkeypatch.setattr(filters, "EXACT_ROWS", 10)
    many = np.arange(len(x)) % 2 == 0
    scores, rows = filters.search_rows(built, x, many, x[:2], 3)
    assert len(calls) == 1 and calls[0][2] == filters.widened(built, None, 0.5)
    assert (rows % 2 == 0).all() and (np.diff(scores, axis=1) <= 1e-6).all()

"""Near-duplicate pairs found through the live index, checked on points of the unit circle whose
cosines are known by hand."""

import numpy as np

from live.duplicates import find_pairs, matches
from live.index import LiveIndex
from trainer import index as faiss_index


def _unit(angles_deg):
    a = np.radians(np.asarray(angles_deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def _index(angles, ids, kind="flat"):
    vectors = _unit(angles)
    return LiveIndex(faiss_index.build(vectors, kind), vectors, ids,
                     np.full(len(ids), -1), [])


def _named(pairs, threshold=None):
    n = len(pairs.cosine) if threshold is None else pairs.above(threshold)
    return [(pairs.ids[a], pairs.ids[b], round(float(c), 4))
            for a, b, c in zip(pairs.a[:n], pairs.b[:n], pairs.cosine[:n], strict=True)]


def test_pairs_by_hand_once_each_most_similar_first():
    # cos 5 deg = 0.9962, cos 20 deg = 0.9397, cos 25 deg = 0.9063; 90 and 180 are far.
    live = _index([0, 5, 25, 90, 180], ["a", "b", "c", "d", "e"])
    pairs = find_pairs(live, 0.9, batch=2)
    assert _named(pairs) == [("a", "b", 0.9962), ("b", "c", 0.9397), ("a", "c", 0.9063)]
    assert pairs.items == 5 and pairs.crowded == 0
    assert pairs.above(0.95) == 1 and pairs.above(0.9396) == 2 and pairs.above(0.99999) == 0
    assert _named(find_pairs(live, 0.95)) == [("a", "b", 0.9962)]


def test_live_adds_and_deletes_are_included():
    live = _index([0, 5, 90, 180], ["a", "b", "c", "d"])
    live.delete(["a"])
    live.upsert(["e"], _unit([92]), [None])  # cos 2 deg with "c"
    assert _named(find_pairs(live, 0.99)) == [("c", "e", 0.9994)]
    live.upsert(["b"], _unit([181]), [None])  # replaced: near "d" now, nowhere near 0
    assert _named(find_pairs(live, 0.99)) == [("d", "b", 0.9998), ("c", "e", 0.9994)]


def test_an_item_with_more_duplicates_than_neighbours_asked_is_counted_crowded():
    live = _index([0, 1, 2, 3, 90], ["a", "b", "c", "d", "e"])
    pairs = find_pairs(live, 0.99, neighbours=2)
    assert pairs.crowded == 4 and pairs.neighbours == 2
    # Each pair of the four close points is found from one end or the other but (a, d) at
    # 3 degrees: neither keeps the other among its two nearest.
    assert {(a, b) for a, b, _ in _named(pairs)} == {("a", "b"), ("a", "c"), ("b", "c"),
                                                      ("b", "d"), ("c", "d")}


def test_hnsw_index_finds_the_same_pairs():
    rng = np.random.default_rng(0)
    angles = rng.uniform(0, 360, 300)
    live = _index(angles, [f"i{i}" for i in range(300)], kind="hnsw")
    exact = _index(angles, [f"i{i}" for i in range(300)])
    found, truth = find_pairs(live, 0.9999), find_pairs(exact, 0.9999)
    # The same pairs with the same cosines. Not necessarily in the same order: HNSW computes
    # the cosines with other float operations than the flat index, and pairs a few degrees
    # apart tie to within a rounding error.
    by_pair = {(found.ids[a], found.ids[b]): c for a, b, c in zip(found.a, found.b,
                                                                   found.cosine, strict=True)}
    expected = {(truth.ids[a], truth.ids[b]): c for a, b, c in zip(truth.a, truth.b,
                                                                    truth.cosine, strict=True)}
    assert len(expected) > 20 and by_pair.keys() == expected.keys()
    assert all(abs(by_pair[pair] - c) < 1e-6 for pair, c in expected.items())
    assert np.all(np.diff(found.cosine) <= 0) and np.all(np.diff(truth.cosine) <= 0)


def test_matches_of_new_vectors_skip_the_requests_own_ids():
    live = _index([0, 5, 25, 90], ["a", "b", "c", "d"])
    found = matches(live, _unit([1, 60]), 0.9, shown=5)
    assert [[(m.id, round(m.cosine, 4)) for m in f] for f in found] == [
        [("a", 0.9998), ("b", 0.9976), ("c", 0.9135)], []]
    assert [m.id for m in matches(live, _unit([1]), 0.9, shown=1)[0]] == ["a"]
    # "a" is the request's own id (a replay, or a replacement): never its own duplicate.
    assert [m.id for m in matches(live, _unit([1]), 0.9, shown=2, skip=["a", "new"])[0]] == [
        "b", "c"]

"""The live index: deletes never come back, adds are found, every index kind, rebuilds."""

import threading

import numpy as np
import pytest

from live.index import LiveIndex
from trainer import index as faiss_index
from trainer.exact_rerank import MIN_ITEMS


def _unit(angles_deg):
    a = np.radians(np.asarray(angles_deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def _small():
    # Four items on the unit circle at 0, 10, 90 and 180 degrees; "c" has no label.
    vectors = _unit([0, 10, 90, 180])
    built = faiss_index.build(vectors, "flat")
    return LiveIndex(built, vectors, ["a", "b", "c", "d"], np.array([0, 0, -1, 1]),
                     ["x", "y"])


def test_search_add_delete_by_hand():
    live = _small()
    q = _unit([3])
    hits = live.search(q, 2)
    assert hits.ids == [["a", "b"]]
    assert np.allclose(hits.scores[0], np.cos(np.radians([3, 7])), atol=1e-6)
    live.delete(["a"])
    assert live.search(q, 2).ids == [["b", "c"]]
    live.upsert(["e"], _unit([4]), ["y"])  # nearer to the query than anything left
    hits = live.search(q, 2)
    assert hits.ids == [["e", "b"]] and list(hits.labels[0]) == [1, 0]
    assert len(live) == 4 and "a" not in live and "e" in live
    # A replaced item keeps its id, moves to its new vector and loses its old one.
    live.upsert(["b"], _unit([-170]), [None])
    assert live.search(q, 1).ids == [["e"]]
    assert live.search(_unit([-175]), 2).ids == [["d", "b"]]
    assert live.label("b") == -1 and live.label("a") is None
    items, total = live.items(0, 10)
    assert total == 4 and [i for i, _ in items] == ["c", "d", "e", "b"]


def test_exclude_and_voters_only():
    live = _small()
    assert live.search(_unit([0]), 2, exclude=["a"]).ids == [["b", "c"]]
    # Only labelled items vote: "c" (unlabelled) is skipped, in the base and in the delta.
    live.upsert(["f"], _unit([1]), [None])
    voters = live.search(_unit([80]), 2, voters_only=True)
    assert voters.ids == [["b", "a"]]
    live.delete(["b"])
    assert live.search(_unit([80]), 2, voters_only=True).ids == [["a", "d"]]


def _clustered(n, dim=16, seed=0):
    """Embedding-like data: points around 50 directions."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim))
    x = centres[rng.integers(0, 50, n)] + 0.3 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_every_index_kind_hides_deleted_items_and_finds_added_ones(kind):
    x = _clustered(3000)
    ids = [f"i{r}" for r in range(3000)]
    live = LiveIndex(faiss_index.build(x[:2000], kind), x[:2000], ids[:2000],
                     np.zeros(2000, dtype=np.int64), ["only"])
    gone = ids[:2000:3]
    live.delete(gone)
    live.upsert(ids[2000:], x[2000:], ["only"] * 1000)
    hits = live.search(x, 20)
    assert not set(gone) & {i for row in hits.ids for i in row}
    # Every added item is its own nearest neighbour; every deleted one is not found at all.
    assert all(hits.ids[r][0] == ids[r] for r in range(2000, 3000))
    assert len(live) == 3000 - len(gone)
    assert live.recall_at_10(300) >= (1.0 if kind == "flat" else 0.9)


def test_rebuild_keeps_the_live_set_and_replays_writes_made_during_it():
    x = _clustered(1500)
    ids = [f"i{r}" for r in range(1500)]
    live = LiveIndex(faiss_index.build(x[:1000], "flat"), x[:1000], ids[:1000],
                     np.zeros(1000, dtype=np.int64), ["only"])
    live.delete(ids[:300])
    live.upsert(ids[1000:1400], x[1000:1400], ["only"] * 400)
    assert live.rebuild_due()
    during = threading.Event()

    def build_while_writing(vectors, kind):
        # A writer on another thread changes the collection while the new base is built.
        def write():
            live.upsert(ids[1400:], x[1400:], ["only"] * 100)
            live.delete(ids[300:310] + ids[1000:1010])
            during.set()

        t = threading.Thread(target=write)
        t.start()
        t.join()
        return faiss_index.build(vectors, kind)

    live.rebuild("hnsw", build=build_while_writing)
    assert during.is_set() and live.kind == "hnsw" and live.rebuilds == 1
    expected = set(ids[310:1000]) | set(ids[1010:])
    items, total = live.items(0, 10_000)
    assert {i for i, _ in items} == expected and total == len(expected)
    # The writes made during the build were replayed on the new base: 20 of its items
    # deleted, 100 items added beside it.
    described = live.describe()
    assert described["deleted_base_items"] == 20 and described["added_items"] == 100
    assert described["base_items"] == 1100 and described["type"] == "hnsw"
    hits = live.search(x[1400:], 1)
    assert [h[0] for h in hits.ids] == ids[1400:]
    assert live.recall_at_10(300) >= 0.95
    assert not live.rebuild_due()


@pytest.mark.parametrize("voters_only", [False, True])
def test_an_index_mostly_deleted_still_answers_k_hits(voters_only):
    """HNSW with most rows filtered out (tombstones below the rebuild threshold of a large
    index, or few labelled items) loses its way in the graph and comes back short of k: the
    rows it did not find are searched exactly."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"i{n}" for n in range(3000)]
    labels = np.where(np.arange(3000) % 100 == 0, 0, -1) if voters_only else np.full(3000, -1)
    live = LiveIndex(faiss_index.build(x, "hnsw"), x, ids, labels, ["c"])
    if not voters_only:
        live.delete([i for n, i in enumerate(ids) if n % 100])  # 30 items left alive
    q = x[1:4]  # queries sitting on rows that are gone or unlabelled
    hits = live.search(q, 20, voters_only=voters_only, breadth=16)
    survivors = np.arange(0, 3000, 100)
    truth = np.argsort(-(q @ x[survivors].T), axis=1)[:, :20]
    for got, want in zip(hits.ids, truth, strict=True):
        assert got == [ids[survivors[j]] for j in want]


def test_single_queries_over_a_large_exact_index_see_deletes_labels_and_adds_exactly():
    """From trainer/exact_rerank.py's MIN_ITEMS items, lone queries take the two-stage exact
    search: through the live index it must still hide deleted items, keep unlabelled ones out
    of the votes and merge added ones, each query's answer the exact one."""
    n = MIN_ITEMS
    x = _clustered(n + 200, seed=3)
    ids = [f"i{r}" for r in range(n + 200)]
    labels = np.where(np.arange(n) % 4 == 0, -1, 0)
    built = faiss_index.build(x[:n], "flat")
    assert built.reranked is not None
    live = LiveIndex(built, x[:n], ids[:n], labels, ["only"])
    queries = np.random.default_rng(4).choice(n, 40, replace=False)
    gone = {ids[r] for r in range(0, n, 3)}  # every third item, some queries' best ones
    live.delete(sorted(gone))
    live.upsert(ids[n:], x[n:], ["only"] * 200)
    alive = np.array([i not in gone for i in ids])
    row_of = {item: row for row, item in enumerate(ids)}
    voter = alive & np.concatenate([labels >= 0, np.ones(200, bool)])
    for voters_only, allowed in ((False, alive), (True, voter)):
        for r in queries:
            hits = live.search(x[r][None], 10, exclude=[ids[r]], voters_only=voters_only)
            truth = x @ x[r]
            truth[~allowed] = -np.inf
            truth[r] = -np.inf
            best = np.sort(truth)[::-1][:10]
            found = [row_of[i] for i in hits.ids[0]]
            assert len(found) == 10 and allowed[found].all() and r not in found
            assert np.allclose(np.sort(truth[found])[::-1], best, atol=1e-5)

"""The two-stage exact search (trainer/exact_rerank.py) answers what a flat scan answers."""

import math

import faiss
import numpy as np
import pytest

from trainer import index as faiss_index
from trainer.exact_rerank import MIN_ITEMS, RerankedScan


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, d: int, spread: float, seed: int = 0) -> np.ndarray:
    """Groups of about 20 near-duplicates: at a small spread the codes alone misorder their
    members."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 20), d))
    return unit(centres[rng.integers(0, len(centres), n)] + spread * rng.normal(size=(n, d)))


def flat_of(x: np.ndarray) -> faiss.IndexFlatIP:
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    return flat


def assert_exact(x: np.ndarray, q: np.ndarray, scores: np.ndarray, rows: np.ndarray, k: int,
                 allowed: np.ndarray | None = None) -> None:
    """Rows are the k best allowed items (up to float32 rounding between equal scores), in
    order, with their own scores; -1 past the allowed ones."""
    truth = x.astype(np.float64) @ q.astype(np.float64)
    if allowed is not None:
        truth[~allowed] = -np.inf
    ranked = np.sort(truth)[::-1]
    kept = rows[rows >= 0]
    assert len(kept) == min(k, int(np.isfinite(truth).sum()))
    assert (rows[len(kept):] == -1).all()
    np.testing.assert_allclose(scores[:len(kept)], truth[kept], atol=1e-5)
    assert (np.diff(scores[:len(kept)]) <= 1e-6).all()
    if len(kept):
        assert truth[kept].min() >= ranked[len(kept) - 1] - 1e-6
        assert len(set(kept.tolist())) == len(kept)


def test_the_coding_error_bound_holds_for_every_item_and_is_within_one_step():
    x = clustered(3000, 16, 0.05)
    scan = RerankedScan(flat_of(x))
    decoded = scan.codes.sa_decode(scan.codes.sa_encode(x))
    errors = np.linalg.norm(x - decoded, axis=1)
    assert errors.max() == pytest.approx(scan.error_bound)
    # fp16 keeps 11 significant bits: each value is coded to within one step, 2^-10 of it
    # (FAISS's conversion does not always round to the nearest, as numpy's does).
    step = np.abs(x) * 2.0 ** -10 + 2.0 ** -24
    assert (np.abs(x - decoded) <= step).all()
    assert scan.error_bound <= math.sqrt(float((step ** 2).sum(1).max()))
    # Cauchy-Schwarz, as the search relies on it: no query's approximate score strays further.
    queries = unit(np.random.default_rng(1).normal(size=(20, 16)))
    approx, rows = scan.codes.search(queries, len(x))
    for q, a, r in zip(queries, approx, rows, strict=True):
        assert np.abs(a - x[r] @ q).max() <= scan.error_bound + 1e-5


def test_single_queries_get_the_exact_answer_where_the_codes_alone_do_not():
    x = clustered(4000, 32, 0.0005)
    scan = RerankedScan(flat_of(x))
    queries = x[np.random.default_rng(2).choice(len(x), 60, replace=False)]
    codes_wrong = 0
    for q in queries:
        scores, rows = scan.search(q[None], 10)
        assert_exact(x, q, scores[0], rows[0], 10)
        _, coded = scan.codes.search(q[None], 10)
        codes_wrong += set(coded[0]) != set(rows[0])
    assert codes_wrong > 0  # the test would prove nothing where the codes alone were exact


def test_a_selector_is_obeyed_also_when_it_lets_fewer_than_k_through():
    x = clustered(2000, 16, 0.05)
    scan = RerankedScan(flat_of(x))
    q = x[:3]
    for keep in (np.arange(len(x)) % 3 == 0, np.isin(np.arange(len(x)), [5, 700, 1999])):
        bits = np.packbits(keep, bitorder="little")
        params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(len(x), faiss.swig_ptr(bits)))
        scores, rows = scan.search(q, 10, params)
        flat_scores, flat_rows = scan.flat.search(q, 10, params=params)
        for i in range(len(q)):
            assert_exact(x, q[i], scores[i], rows[i], 10, keep)
        np.testing.assert_array_equal(rows == -1, flat_rows == -1)
        np.testing.assert_array_equal(scores[rows == -1], flat_scores[flat_rows == -1])


def test_the_bound_is_what_finds_a_best_item_the_codes_tie_with_many_worse_ones():
    """One dimension carries the scores. The best item (0.5041) and 40 items just below it
    (0.5041 - 1e-5 ... - 4e-4) share one fp16 code, 0.50390625 (fp16's step is 2^-11 from 0.5
    to 1): the codes see 41 equal scores and keep the first 33 found, not the best. The best of
    those 33 (0.50409) scores above their shared code, so by their own scores they would look
    proven; the coding error bound says the best could still be outside, and the fallback
    finds it. Items at -1 and 1, coded exactly, frame it; the one at 1 is not selectable."""
    t = 0.5041
    values = np.concatenate([[-1.0, 1.0], t - 1e-5 * np.arange(1, 41), [t]])
    x = np.stack([values, np.zeros_like(values)], axis=1).astype(np.float32)
    scan = RerankedScan(flat_of(x))
    codes = scan.codes.sa_encode(x)
    assert (codes[2:] == codes[-1]).all()
    assert scan.codes.sa_decode(codes)[-1, 0] == 0.50390625
    keep = np.arange(len(x)) != 1
    bits = np.packbits(keep, bitorder="little")
    params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(len(x), faiss.swig_ptr(bits)))
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    _, coded = scan.codes.search(q, 1 + 32, params=params)
    assert len(x) - 1 not in coded[0]  # the codes alone lose the best item
    scores, rows = scan.search(q, 1, params)
    assert rows[0, 0] == len(x) - 1 and scores[0, 0] == pytest.approx(t)
    scan.error_bound = 0.0  # without the bound the candidates would have been trusted
    _, rows = scan.search(q, 1, params)
    assert rows[0, 0] != len(x) - 1


class CountingFlat:
    """The flat index, counting the queries that fall back to it."""

    def __init__(self, flat: faiss.IndexFlatIP) -> None:
        self.flat, self.queries = flat, 0

    def search(self, q: np.ndarray, k: int, params=None):
        self.queries += len(q)
        return self.flat.search(q, k, params=params)


def test_scores_packed_tighter_than_the_codes_fall_back_to_the_flat_scan():
    rng = np.random.default_rng(3)
    collapsed = unit(1 + 1e-3 * rng.normal(size=(3000, 16)))  # a collapsed encoder's output
    spread = clustered(3000, 16, 0.05)
    for x, fell_back in ((collapsed, True), (spread, False)):
        scan = RerankedScan(flat_of(x))
        scan.flat = CountingFlat(scan.flat)
        queries = x[:5]
        scores, rows = scan.search(queries, 10)
        for i in range(len(queries)):
            assert_exact(x, queries[i], scores[i], rows[i], 10)
        assert scan.flat.queries == (5 if fell_back else 0)


@pytest.mark.parametrize("k", [1, 49, 50, 80])
def test_k_up_to_and_beyond_the_collection(k):
    x = clustered(50, 8, 0.1)
    scan = RerankedScan(flat_of(x))
    scores, rows = scan.search(x[:2], k)
    assert rows.shape == (2, min(k, 50))
    for i in range(2):
        assert_exact(x, x[i], scores[i], rows[i], k)


def test_a_large_flat_index_answers_few_queries_in_two_stages_and_keeps_them_after_loading(
        tmp_path):
    x = clustered(MIN_ITEMS, 16, 0.05)
    built = faiss_index.build(x, "flat")
    assert built.reranked is not None
    assert built.memory_bytes() == x.nbytes + 2 * x.shape[0] * x.shape[1]  # 2-byte codes
    path = tmp_path / "index.faiss"
    faiss_index.save(built, path)
    loaded = faiss_index.load(path, built.describe())
    assert loaded.reranked is not None
    for index in (built, loaded):
        for count in (1, 7, 8, 20):  # two stages below 8 queries, the flat scan from 8 on
            scores, rows = index.search(x[:count], 10)
            for i in range(count):
                assert_exact(x, x[i], scores[i], rows[i], 10)
    small = faiss_index.build(x[:MIN_ITEMS - 1], "flat")
    assert small.reranked is None


class ThreadsSeen:
    """The codes index, noting the OpenMP threads its searches were given."""

    def __init__(self, codes: faiss.Index) -> None:
        self.codes, self.threads = codes, []

    def search(self, q: np.ndarray, k: int, params=None):
        self.threads.append(faiss.omp_get_max_threads())
        return self.codes.search(q, k, params=params)


def test_the_codes_are_scanned_on_one_thread_per_query_and_the_callers_threads_are_restored():
    x = clustered(2000, 16, 0.05)
    scan = RerankedScan(flat_of(x))
    scan.codes = ThreadsSeen(scan.codes)
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        scan.search(x[:1], 10)
        scan.search(x[:4], 10)
        assert scan.codes.threads == [1, 2]
        assert faiss.omp_get_max_threads() == 2
    finally:
        faiss.omp_set_num_threads(before)

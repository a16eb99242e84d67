"""Comparing two models: the overlap of neighbour lists, the items that changed most and the
paired kNN figures, on cases small enough to check by hand."""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
import pytest

from trainer import index as faiss_index
from trainer.bundle import Bundle
from trainer.compare import CannotCompare, compare
from trainer.neighbour_overlap import changed_most, list_overlap, neighbour_lists, renumber


def test_overlap_is_the_share_of_places_whose_item_is_in_the_other_list():
    a = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    b = np.array([[3, 2, 0], [0, 10, 11], [9, 8, 7]])
    assert list_overlap(a, b).tolist() == pytest.approx([2 / 3, 0.0, 1.0])


def test_empty_places_match_nothing():
    a = np.array([[1, -1], [-1, -1]])
    b = np.array([[-1, 1], [-1, -1]])
    assert list_overlap(a, b).tolist() == [0.5, 0.0]
    with pytest.raises(ValueError):
        list_overlap(a, b[:, :1])


def test_changed_most_is_lowest_overlap_first_and_equal_ones_in_order():
    assert changed_most(np.array([0.5, 0.0, 1.0, 0.0, 0.2]), 3).tolist() == [1, 3, 4]
    assert changed_most(np.array([0.5]), 0).tolist() == []


def _unit(degrees: list[float]) -> np.ndarray:
    r = np.radians(degrees)
    return np.stack([np.cos(r), np.sin(r)], 1).astype(np.float32)


def test_neighbour_lists_leave_the_item_out_and_keep_to_the_allowed_rows():
    vectors = _unit([0, 10, 25, 90, 180])
    built = faiss_index.build(vectors, "flat")
    scores, rows = neighbour_lists(built, vectors, np.array([0, 3]), None, 2)
    assert rows.tolist() == [[1, 2], [2, 1]]
    assert scores[0].tolist() == pytest.approx([math.cos(math.radians(10)),
                                                math.cos(math.radians(25))])
    # Row 1 is not allowed: row 0's nearest allowed are 2, then 3.
    _, rows = neighbour_lists(built, vectors, np.array([0]), np.array([0, 2, 3]), 2)
    assert rows.tolist() == [[2, 3]]
    # Fewer allowed rows than places: the rest is empty.
    _, rows = neighbour_lists(built, vectors, np.array([0]), np.array([0, 4]), 3)
    assert rows.tolist() == [[4, -1, -1]]
    assert renumber(np.array([[4, -1, 0]]), np.array([7, -1, -1, -1, 8])).tolist() == [[8, -1,
                                                                                         7]]


def _bundle(version: str, items: dict[str, tuple[float, str]], dataset: str = "d",
            knn_k: int = 1) -> Bundle:
    """A bundle of 2-D unit vectors at the given angles (no encoder: nothing is embedded)."""
    ids = list(items)
    vectors = _unit([items[i][0] for i in ids])
    classes = ["x", "y"]
    return Bundle(version=version, path=cast(Any, None),
                  manifest={"version": version, "dataset": dataset, "dim": 2,
                            "config": {"knn_k": knn_k, "knn_sigma": 0.1}},
                  model=cast(Any, None), index=faiss_index.build(vectors, "flat"), ids=ids,
                  row_of={item: i for i, item in enumerate(ids)},
                  labels=np.array([classes.index(items[i][1]) for i in ids]), classes=classes,
                  vectors=vectors, loaded_at=0.0)


# p, q, r, s in both; t (beside p) only in a, u (beside r) only in b, so neither counts.
# Nearest other under a: p->q, q->p, r->q, s->r. Under b: p->q, q->p, r->s, s->r.
A = _bundle("a", {"p": (0, "x"), "t": (5, "x"), "q": (10, "x"), "r": (30, "y"),
                  "s": (60, "y")})
B = _bundle("b", {"u": (58, "y"), "s": (70, "y"), "r": (60, "y"), "q": (10, "x"),
                  "p": (0, "x")})


def test_two_models_compared_on_the_items_both_hold():
    out = compare(A, B, None, "no dataset here", k=1)
    assert out["common_items"] == 4 and out["dataset"] == "d"
    assert out["overlap"] == {"k": 1, "items": 4, "mean": 0.75}
    first = out["changed_most"][0]
    assert (first["id"], first["label"], first["overlap"]) == ("r", "y", 0.0)
    assert [n["id"] for n in first["a"]] == ["q"] and [n["id"] for n in first["b"]] == ["s"]
    assert first["a"][0]["score"] == pytest.approx(math.cos(math.radians(20)))
    assert first["b"][0]["score"] == pytest.approx(math.cos(math.radians(10)))
    assert [c["overlap"] for c in out["changed_most"]] == [0.0, 1.0, 1.0, 1.0]
    # Leave-one-out 1-NN over p, q, r, s: a gets r wrong (its nearest, q, is an x), b none.
    # Per-query differences 0, 0, 1, 0: mean 0.25, sample sd 0.5, standard error 0.25.
    knn = out["knn"]
    assert (out["a"]["knn_top1"], out["b"]["knn_top1"]) == (0.75, 1.0)
    assert knn["protocol"] == "leave-one-out" and knn["queries"] == 4 and knn["k"] == 1
    assert knn["difference"] == 0.25 and knn["standard_error"] == pytest.approx(0.25)
    assert knn["margin"] == pytest.approx(0.5)
    assert out["label_free"] is None and out["a"]["label_free"] is None
    assert out["notes"] == ["no label-free score: no dataset here"]


def test_an_item_the_two_models_label_differently_is_left_out_of_the_knn_figures():
    relabelled = _bundle("b", {"u": (58, "y"), "s": (70, "y"), "r": (60, "x"), "q": (10, "x"),
                               "p": (0, "x")})
    knn = compare(A, relabelled, None, "no dataset here", k=1)["knn"]
    assert knn["queries"] == 3  # p, q and s; r is an x under b, a y under a


def test_a_model_compared_with_itself_agrees_everywhere():
    out = compare(A, A, None, "no dataset here", k=2)
    assert out["overlap"]["mean"] == 1.0 and out["knn"]["difference"] == 0.0


def test_models_of_two_datasets_or_without_items_in_common_are_not_compared():
    other = _bundle("c", {"p": (0, "x"), "q": (10, "x")}, dataset="e")
    with pytest.raises(CannotCompare, match=r"dataset 'd'.*dataset 'e'"):
        compare(A, other, None)
    lonely = _bundle("c", {"p": (0, "x"), "z": (10, "x")})
    with pytest.raises(CannotCompare, match="1 items in common"):
        compare(A, lonely, None)

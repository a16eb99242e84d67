"""GET /models/{version}/compare/{other} through the real app, on the two real bundles of the
session (V1, V2: runs of seeds 0 and 1 on the CIFAR slice) and the dataset's real files. The
figures are checked against what the runs measured on the same items and against exact
neighbour lists computed here."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest

from service.errors import PROBLEM
from tests.conftest import CIFAR_SLICE
from tests.service.conftest import V1, V2
from trainer.bundle import write_bundle
from trainer.label_free import GATE_MARGIN, MEASURE


def _dataset(api) -> None:
    """The models' dataset ("cifar-slice") on the server, as a folder."""
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        z.extractall(api.settings.data_root / "cifar-slice")


def _exact_lists(vectors: np.ndarray, k: int) -> list[set[int]]:
    sims = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    return [set(np.argsort(-row)[:k].tolist()) for row in sims]


def test_two_versions_compared_on_the_same_items(api, trained_runs):
    _dataset(api)
    r = api.client.get(f"/models/{V1}/compare/{V2}")
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["a"]["version"], out["b"]["version"], out["dataset"]) == (V1, V2, "cifar-slice")
    assert out["common_items"] == 120 and out["notes"] == []
    metrics = {v: json.loads((trained_runs[v] / "metrics.json").read_text()) for v in (V1, V2)}

    # The same items, split and k as the runs' own evaluations: the same kNN figures.
    knn = out["knn"]
    assert (knn["protocol"], knn["queries"], knn["k"], knn["sigma"]) == ("test", 24, 10, 0.1)
    for side, version in (("a", V1), ("b", V2)):
        assert out[side]["knn_top1"] == pytest.approx(metrics[version]["knn_top1"])
    assert knn["difference"] == pytest.approx(out["b"]["knn_top1"] - out["a"]["knn_top1"])
    assert knn["margin"] == pytest.approx(2 * knn["standard_error"])

    # The label-free score on every item (fewer than the sample) with the runs' views.
    free = out["label_free"]
    assert (free["items"], free["augmentation"]) == (120, "mild")
    # On 120 items the item-by-item differences are noisier than the score's spread measured
    # on thousands (GATE_MARGIN): the margin is theirs (trainer/judge.label_free_margin).
    assert GATE_MARGIN < free["margin"] < 0.2, free
    assert free["measure"] == MEASURE == metrics[V1]["label_free_measure"]
    for side, version in (("a", V1), ("b", V2)):
        assert out[side]["label_free"] == pytest.approx(metrics[version]["label_free"],
                                                        abs=1e-6)

    # The overlap of exact top-10 lists, every item (fewer than the sample).
    lists = {}
    for version in (V1, V2):
        vectors = np.load(api.settings.models_root / version / "embeddings.npy")
        lists[version] = _exact_lists(vectors, 10)
    ids = json.loads((api.settings.models_root / V1 / "items.json").read_text())["ids"]
    overlaps = [len(a & b) / 10 for a, b in zip(lists[V1], lists[V2], strict=True)]
    assert out["overlap"]["k"] == 10 and out["overlap"]["items"] == 120
    assert out["overlap"]["mean"] == pytest.approx(np.mean(overlaps))
    assert 0 < out["overlap"]["mean"] < 1  # two seeds: some neighbours kept, some not

    changed = out["changed_most"]
    assert len(changed) == 12
    assert [c["overlap"] for c in changed] == sorted(c["overlap"] for c in changed)
    assert changed[0]["overlap"] == pytest.approx(min(overlaps))
    for item in changed:
        row = ids.index(item["id"])
        assert item["overlap"] == pytest.approx(overlaps[row])
        assert {ids.index(n["id"]) for n in item["a"]} == lists[V1][row]
        assert {ids.index(n["id"]) for n in item["b"]} == lists[V2][row]
        assert item["label"] == item["id"].split("/")[1]
        scores = [n["score"] for n in item["a"]]
        assert scores == sorted(scores, reverse=True)


def test_a_pair_is_computed_once_and_a_missing_dataset_is_said(api):
    c = api.client
    first = c.get(f"/models/{V2}/compare/{V1}").json()
    assert first["label_free"] is None and first["a"]["label_free"] is None
    assert first["notes"] == ["no label-free score: dataset 'cifar-slice' is not on this server"]
    assert first["knn"]["protocol"] == "leave-one-out"  # no split without the dataset's files
    # Not kept: measured without the dataset. Once the dataset is there, it is measured again
    # and kept.
    _dataset(api)
    second = c.get(f"/models/{V2}/compare/{V1}").json()
    assert second["label_free"]["items"] == 120 and second["knn"]["protocol"] == "test"
    comparisons = c.app.state.comparisons
    assert len(comparisons) == 1
    shutil.rmtree(api.settings.data_root / "cifar-slice")
    assert c.get(f"/models/{V2}/compare/{V1}").json() == second  # the kept answer


def test_unknown_versions_and_two_datasets_are_problems(api, trained_runs):
    c = api.client
    r = c.get(f"/models/{V1}/compare/20990101-000000-none")
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    assert "20990101-000000-none" in r.json()["detail"]
    assert c.get(f"/models/nope/compare/{V1}").status_code == 404
    assert c.get(f"/models/{V1}/compare/..%2Fx").status_code in (404, 422)
    assert c.get(f"/models/{V1}/compare/-bad").status_code == 422
    other = "20260103-000000-other"
    write_bundle(trained_runs[V1], api.settings.models_root, dataset="digits", version=other)
    r = c.get(f"/models/{V1}/compare/{other}")
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM
    assert r.json()["detail"] == (f"version {V1} is a model of dataset 'cifar-slice' and "
                                  f"version {other} of dataset 'digits': only models of one "
                                  "dataset can be compared on the same items")

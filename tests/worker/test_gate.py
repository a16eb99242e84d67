"""The promotion gate through a real worker: a job's model becomes current only when it beats
the current model of its dataset (or, for the first, raw pixels) beyond the noise, measured on
the same items; otherwise it is published as a candidate, and the record says why.

On the digits at the suite's budget, training from the reference's random memory bank lowers
kNN top-1 far below the untrained network (0.53-0.68 against 0.91-0.92; from the network's own
embeddings, 0.83-0.87: docs/benchmarks.md) and both stay below raw pixels (0.99):
a learning rate of 1e-9 gives the untrained network, a better model than the trained one,
which makes the decisions known.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from state.jobs import SUCCEEDED, Job
from trainer.bundle import current_version, previous_version
from trainer.current import set_current
from trainer.judge import label_free_margin
from trainer.label_free import MEASURE, MEASURE_BEFORE, LabelFreeScore
from trainer.label_free_baselines import LABEL_FREE_TERMS
from worker.gate import judge

UNTRAINED = {"lr": 1e-9}
WORSE = {"bank_init": "random"}  # trained: well below the untrained network (docstring)


def _gate(stack, job):
    done = stack.finished(job.id)
    assert done.status == SUCCEEDED, done.error
    manifest = json.loads((stack.settings.models_root / done.model_version /
                           "manifest.json").read_text())
    assert manifest["gate"] == done.gate  # the bundle and the record say the same
    return done, done.gate


@pytest.mark.timeout(1200)  # three short jobs
def test_the_gate_keeps_out_worse_models_and_lets_better_ones_in(redis_stack):
    stack = redis_stack
    stack.start_worker()
    models = stack.settings.models_root

    # The first model of a dataset must beat raw pixels: it does not, so it is a candidate.
    trained, gate = _gate(stack, stack.submit(promote="gate", **WORSE))
    assert gate["promoted"] is False and gate["policy"] == "gate"
    assert gate["incumbent_name"] == "raw pixels" and gate["measure"] == "knn_top1"
    assert gate["candidate"] < gate["incumbent"] and gate["items"] == 363
    assert "a loss of" in gate["reason"]
    assert "where it needed a gain of more than the margin" in gate["reason"]
    assert current_version(models) is None

    # A person may still make it current (what `always` does is checked below).
    with stack.api() as api:
        r = api.post(f"/models/{trained.model_version}/promote")
        assert r.status_code == 200 and r.json()["current"] is True, r.text
    assert current_version(models) == trained.model_version

    # The untrained network beats that trained model on the same 363 queries: it goes in.
    better, gate = _gate(stack, stack.submit(promote="gate", **UNTRAINED))
    assert gate["promoted"] is True
    assert gate["incumbent_name"] == f"version {trained.model_version}"
    assert gate["candidate"] - gate["incumbent"] > gate["margin"] > 0 and gate["items"] == 363
    assert current_version(models) == better.model_version
    assert previous_version(models) == trained.model_version

    # A model worse than the current one is published as a candidate; the current one stays.
    worse, gate = _gate(stack, stack.submit(promote="gate", **WORSE))
    assert gate["promoted"] is False and gate["candidate"] < gate["incumbent"]
    assert gate["incumbent_name"] == f"version {better.model_version}"
    assert current_version(models) == better.model_version
    assert (models / worse.model_version / "manifest.json").exists()

    # Through the API: the verdicts on the jobs and the models, and a one-step rollback.
    with stack.api() as api:
        job = api.get(f"/jobs/{worse.id}").json()
        assert job["promote"] == "gate" and job["gate"]["promoted"] is False
        listed = api.get("/models").json()
        assert (listed["current"], listed["previous"]) == (better.model_version,
                                                           trained.model_version)
        by_version = {m["version"]: m for m in listed["data"]}
        assert by_version[worse.model_version]["gate"]["reason"] == job["gate"]["reason"]
        r = api.post("/models/current/rollback")
        assert r.status_code == 200 and r.json()["version"] == trained.model_version
        assert current_version(models) == trained.model_version
        bad = api.post("/train", json={"dataset": "digits", "promote": "sometimes"})
        assert bad.status_code == 422 and "promote" in bad.text


@pytest.mark.parametrize(("policy", "promoted"), [("gate", True), ("always", True),
                                                   ("never", False)])
def test_the_policy_decides_what_the_verdict_does(tmp_path, policy, promoted):
    """A run whose figures beat raw pixels (1.0 against 0.5 over 400 queries): `gate` and
    `always` make it current, `never` records the same verdict and keeps it out."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"knn_k": 1, "knn_sigma": 0.1}))
    (run / "metrics.json").write_text(json.dumps({
        "knn_top1": 1.0, "knn_top5": 1.0, "knn_protocol": "test", "knn_queries": 400,
        "pixel_knn_top1": 0.5}))
    np.savez(run / "embeddings.npz", vectors=np.eye(2, dtype=np.float32), ids=np.array(["a", "b"]),
             labels=np.array([0, 1]), classes=np.array(["x", "y"]),
             is_eval=np.array([False, True]))
    gate = judge(Job(id="j", dataset="d", config={}, promote=policy), run, tmp_path / "models")
    assert gate["promote"] is True and gate["incumbent_name"] == "raw pixels"
    assert gate["policy"] == policy and gate["promoted"] is promoted
    # sqrt((0 + 0.25) / 400) = 0.025: a margin of 0.05 against a gain of 0.5.
    assert gate["margin"] == pytest.approx(0.05)


def _unlabelled_run(tmp_path, score):
    """A finished run of a collection without labels, scored `score` against raw pixels'
    0.3 by the label-free measure of today."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({}))
    (run / "metrics.json").write_text(json.dumps({
        "label_free": score, "pixel_label_free": 0.3, "untrained_label_free": 0.2,
        "label_free_items": 50, "label_free_measure": MEASURE}))
    np.savez(run / "embeddings.npz", vectors=np.eye(2, dtype=np.float32), ids=np.array(["a", "b"]),
             labels=np.array([-1, -1]), classes=np.array([], dtype=str),
             is_eval=np.array([False, False]))
    return run


@pytest.mark.parametrize(("score", "promoted"), [(0.5, True), (0.32, False)])
def test_without_labels_the_label_free_score_must_beat_raw_pixels_by_its_margin(
        tmp_path, score, promoted):
    gate = judge(Job(id="j", dataset="d", config={}), _unlabelled_run(tmp_path, score),
                 tmp_path / "models")
    assert gate["measure"] == "label_free" and gate["incumbent_name"] == "raw pixels"
    assert gate["margin"] == 0.025 and gate["items"] == 50 and gate["promoted"] is promoted


def test_on_few_items_the_margin_is_the_noise_of_the_per_item_differences(tmp_path):
    """50 items whose terms differ wildly from raw pixels' (+1.0 or -0.6 each: a gain of 0.2
    on average, sd 0.808): two standard errors, 0.229, are more than the fixed 0.025, and the
    gain of 0.2 is not more than that."""
    run = _unlabelled_run(tmp_path, 0.5)
    mine = np.array([1.0, 0.0] * 25)
    pixels = np.array([0.0, 0.6] * 25)
    np.savez(run / LABEL_FREE_TERMS, model=mine, pixels=pixels)
    gate = judge(Job(id="j", dataset="d", config={}), run, tmp_path / "models")
    assert gate["margin"] == pytest.approx(label_free_margin(mine, pixels))
    assert gate["margin"] == pytest.approx(2 * 0.8 * math.sqrt(50 / 49) / math.sqrt(50))
    assert gate["promoted"] is False and "not more than the margin" in gate["reason"]
    # Against the current model scored again on these items: its own terms pair with these.
    models = tmp_path / "models"
    _current(models, {"label_free": 0.6, "label_free_measure": MEASURE})
    theirs = LabelFreeScore(0.3, items=50, per_item=pixels)
    gate = judge(Job(id="j", dataset="d", config={}), run, models, lambda version: theirs)
    assert gate["incumbent_name"] == "version v1" and gate["promoted"] is False
    assert gate["margin"] == pytest.approx(label_free_margin(mine, theirs.per_item))
    # The same gain with steady differences: the fixed margin, and the model is promoted.
    np.savez(run / LABEL_FREE_TERMS, model=np.full(50, 0.5), pixels=np.full(50, 0.3))
    gate = judge(Job(id="j", dataset="d", config={}), run, tmp_path / "none")
    assert gate["margin"] == 0.025 and gate["promoted"] is True


@pytest.mark.parametrize("incumbent_measure", [None, MEASURE_BEFORE, MEASURE])
def test_a_current_model_scored_by_another_measure_is_not_compared_with(
        tmp_path, incumbent_measure):
    """The current model's score (0.9) is of the reciprocal rank, recorded as such or from
    before measures were recorded: beside a log-rank score of 0.5 it says nothing, and the new
    model is judged against raw pixels (0.3) instead. Of the same measure, it keeps it out."""
    models = tmp_path / "models"
    (models / "v1").mkdir(parents=True)
    figures = {"label_free": 0.9} | (
        {"label_free_measure": incumbent_measure} if incumbent_measure else {})
    (models / "v1" / "manifest.json").write_text(json.dumps({"dataset": "d",
                                                             "metrics": figures}))
    (models / "v1" / "items.json").write_text(json.dumps({"ids": ["a", "b"]}))
    set_current(models, "v1")
    gate = judge(Job(id="j", dataset="d", config={}), _unlabelled_run(tmp_path, 0.5), models)
    if incumbent_measure == MEASURE:
        assert gate["promoted"] is False and gate["incumbent_name"] == "version v1"
        assert gate["incumbent"] == 0.9
        return
    assert gate["promoted"] is True and gate["incumbent_name"] == "raw pixels"
    assert gate["incumbent"] == 0.3 and gate["candidate"] == 0.5
    assert gate["reason"].startswith(
        f"version v1's label-free score measures {MEASURE_BEFORE}, this model's {MEASURE}")


@pytest.mark.timeout(900)  # two short jobs
def test_on_a_grown_unlabelled_collection_the_current_model_is_scored_on_the_new_items(
        redis_stack, digits_dir):
    """No labels: the first model is current by choice; 60 items are added; the next job's
    model is weighed against the current one scored again on the new run's 360 items and
    views, not against the figure it got on its own 300."""
    import shutil

    stack = redis_stack
    flat = stack.settings.data_root / "flat"
    flat.mkdir()
    pictures = sorted(digits_dir.glob("train/*/*.png"))
    for n, picture in enumerate(pictures[:300]):
        shutil.copy(picture, flat / f"{n:04d}.png")
    stack.start_worker()
    first, _ = _gate(stack, stack.submit("flat", promote="always"))
    models = stack.settings.models_root
    stored = json.loads((models / first.model_version / "manifest.json").read_text())[
        "metrics"]
    assert stored["label_free_items"] == 300 and current_version(models, "flat") == \
        first.model_version
    with stack.api() as api:
        files = [("files", (f"{n:04d}.png", picture.read_bytes(), "image/png"))
                 for n, picture in enumerate(pictures[300:360])]
        r = api.post("/collections/flat/items", files=files[:30], data={"prefix": "added/"})
        assert r.status_code == 201, r.text
        r = api.post("/collections/flat/items", files=files[30:], data={"prefix": "added/"})
        assert r.status_code == 201, r.text
    second, gate = _gate(stack, stack.submit("flat", promote="gate"))
    assert gate["measure"] == "label_free" and gate["items"] == 360
    assert gate["incumbent_name"] == f"version {first.model_version}"
    assert gate["incumbent"] != stored["label_free"]  # measured again, on other items
    assert "on 360 items" in gate["reason"]
    expected = second.model_version if gate["promoted"] else first.model_version
    assert current_version(models, "flat") == expected


def _current(models, figures, ids=("a", "b")):
    """A current version v1 of dataset d holding `ids`, with `figures` as its metrics."""
    (models / "v1").mkdir(parents=True)
    (models / "v1" / "manifest.json").write_text(json.dumps({"dataset": "d",
                                                             "metrics": figures}))
    (models / "v1" / "items.json").write_text(json.dumps({"ids": list(ids)}))
    np.save(models / "v1" / "embeddings.npy", np.eye(2, dtype=np.float32)[:len(ids)])
    set_current(models, "v1")


def _run_labelled_on_new_items(tmp_path, score):
    """A run whose only labelled items ("c", "d", two classes, left out in turn) were added
    to the collection after the current version was trained: it holds "a" and "b" only."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"knn_k": 1, "knn_sigma": 0.1}))
    (run / "metrics.json").write_text(json.dumps({
        "loo_knn_top1": 1.0, "loo_knn_top5": 1.0, "knn_protocol": "leave-one-out",
        "knn_queries": 2, "pixel_knn_top1": 0.5, "label_free": score,
        "pixel_label_free": 0.3, "untrained_label_free": 0.2, "label_free_items": 4,
        "label_free_measure": MEASURE}))
    np.savez(run / "embeddings.npz", vectors=np.eye(4, dtype=np.float32),
             ids=np.array(["a", "b", "c", "d"]), labels=np.array([-1, -1, 0, 1]),
             classes=np.array(["x", "y"]), is_eval=np.zeros(4, bool))
    return run


@pytest.mark.parametrize(("score", "promoted"), [(0.35, False), (0.5, True)])
def test_labels_the_current_model_never_saw_do_not_wave_a_model_through(
        tmp_path, score, promoted):
    """Labels that only items added since the current version carry leave no labelled item in
    common to compare on: the label-free score decides (the current version's 0.4, margin
    0.025), where the gate used to promote whatever the new model was."""
    models = tmp_path / "models"
    _current(models, {"label_free": 0.4, "label_free_measure": MEASURE})
    gate = judge(Job(id="j", dataset="d", config={}),
                 _run_labelled_on_new_items(tmp_path, score), models)
    assert gate["measure"] == "label_free" and gate["incumbent_name"] == "version v1"
    assert gate["incumbent"] == 0.4 and gate["candidate"] == score
    assert gate["promoted"] is promoted
    assert gate["reason"].startswith("no labelled item in common with version v1: judged "
                                     "without labels. label_free "), gate["reason"]


def test_a_first_model_without_a_labelled_query_is_judged_against_pixels_without_labels(
        tmp_path):
    run = _run_labelled_on_new_items(tmp_path, 0.31)
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps(metrics | {"knn_queries": 0}))
    gate = judge(Job(id="j", dataset="d", config={}), run, tmp_path / "models")
    assert gate["measure"] == "label_free" and gate["incumbent_name"] == "raw pixels"
    assert gate["promoted"] is False  # 0.31 against 0.3: within the margin
    assert gate["reason"].startswith("no labelled query to compare with raw pixels")


def test_a_current_model_without_a_label_free_score_leaves_raw_pixels_to_beat(tmp_path):
    models = tmp_path / "models"
    _current(models, {"knn_top1": 0.9})
    gate = judge(Job(id="j", dataset="d", config={}), _unlabelled_run(tmp_path, 0.31), models)
    assert gate["incumbent_name"] == "raw pixels" and gate["promoted"] is False
    assert gate["reason"].startswith("version v1 has no label-free score, so this model is "
                                     "judged against raw pixels")


@pytest.mark.parametrize(("rescored", "promoted"), [(0.45, True), (0.48, False), (None, False)])
def test_the_current_model_is_scored_again_on_the_new_runs_items(tmp_path, rescored, promoted):
    """The current version scored 0.6 on its own run's items, before the collection changed;
    the new run (0.5 on its 50 items) is weighed against what that version scores on these
    items and views (0.45 or 0.48), and against its own old figure only where it cannot be
    scored again."""
    models = tmp_path / "models"
    _current(models, {"label_free": 0.6, "label_free_measure": MEASURE,
                      "label_free_items": 40})
    asked = []

    def rescore(version):
        asked.append(version)
        return None if rescored is None else LabelFreeScore(rescored, items=50)

    gate = judge(Job(id="j", dataset="d", config={}), _unlabelled_run(tmp_path, 0.5), models,
                 rescore)
    assert asked == ["v1"] and gate["incumbent_name"] == "version v1"
    assert gate["incumbent"] == (0.6 if rescored is None else rescored)
    assert gate["promoted"] is promoted and gate["items"] == 50


def test_a_current_model_of_an_earlier_measure_is_scored_again_rather_than_skipped(tmp_path):
    models = tmp_path / "models"
    _current(models, {"label_free": 0.9, "label_free_measure": MEASURE_BEFORE})
    gate = judge(Job(id="j", dataset="d", config={}), _unlabelled_run(tmp_path, 0.5), models,
                 lambda version: LabelFreeScore(0.49, items=50))
    assert gate["incumbent_name"] == "version v1" and gate["incumbent"] == 0.49
    assert gate["promoted"] is False  # 0.5 against 0.49: within the margin


def test_a_current_model_that_cannot_be_scored_again_leaves_its_own_figure(tmp_path):
    models = tmp_path / "models"
    _current(models, {"label_free": 0.45, "label_free_measure": MEASURE})

    def broken(version):
        raise OSError("encoder.pt: damaged")

    gate = judge(Job(id="j", dataset="d", config={}), _unlabelled_run(tmp_path, 0.5), models,
                 broken)
    assert gate["incumbent"] == 0.45 and gate["promoted"] is True

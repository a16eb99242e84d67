"""Jobs through a real Celery worker process, on Redis and on the embedded default."""

import json
import time

import pytest
import torch

from state.jobs import CANCELED, FAILED, QUEUED, RUNNING, SUCCEEDED
from tests.worker.conftest import MAP_POINTS, TINY, write_tiny_dataset
from trainer.bundle import current_version
from trainer.errors import ConfigError, DatasetError


def _weights(stack, job_id):
    path = stack.settings.runs_root / job_id / "encoder.pt"
    return torch.load(path, weights_only=True)["state_dict"]


def _resumed_run(stack, job_id: str, lost: str, after: int) -> int:
    """The epoch where the run that took the job over from owner `lost` began, checked at its
    first epoch: a run resumed from the checkpoint begins after the epochs done before it (at
    least `after`). One that ignored the checkpoint would begin again at epoch 1, and its
    records, written by position, would still read 1..n in the end."""
    job = stack.wait(job_id, lambda j: j.worker not in (None, lost) and "run_first_epoch" in
                     j.progress, 300, "the first epoch of the resumed run")
    first = job.progress["run_first_epoch"]
    assert first > after, f"the resumed run began at epoch {first}: {job.progress}"
    return first


def _epochs_by_run(history: list[dict], first: int) -> None:
    """Every epoch from `first` on was recorded by the run that began there, tagged with its
    first epoch; those before by the first run (or, checkpointed but not yet recorded when it
    stopped, read back from its log untagged)."""
    tags = [(r.get("attempt"), r.get("run_first_epoch")) for r in history]
    resumed = set(tags[first - 1:])
    assert len(resumed) == 1 and resumed.pop()[1] == first, tags
    assert tags[0] == (1, 1) and set(tags[:first - 1]) <= {(1, 1), (None, None)}, tags


def test_job_runs_to_a_published_bundle_with_progress(stack):
    stack.start_worker()
    job = stack.submit(rounds=2, epochs_per_round=2)
    assert stack.store.get(job.id).status == QUEUED
    seen = stack.wait(job.id, lambda j: j.status == RUNNING and j.progress.get("epoch"),
                      what="progress while running")
    assert seen.progress["loss"] > 0 and seen.progress["images_per_s"] > 0
    assert "eta_s" in seen.progress and seen.heartbeat_at
    done = stack.finished(job.id)
    assert done.status == SUCCEEDED, done.error
    assert done.model_version == current_version(stack.settings.models_root)
    assert done.finished_at >= done.started_at >= done.created_at
    manifest = json.loads((stack.settings.models_root / done.model_version /
                           "manifest.json").read_text())
    assert manifest["item_count"] == 1797 and manifest["job_id"] == job.id
    assert manifest["index"]["recall_at_10"] == 1.0 and "knn_top1" in manifest["metrics"]
    # The worker's MAP_POINTS: a map of a sample of the items.
    assert manifest["map_points"] == MAP_POINTS < 1797
    # The figures the job reports are those of the model it published, beside raw pixels on
    # the same split.
    assert done.progress["phase"] == "done"
    reported = done.progress["metrics"]
    assert reported["knn_top1"] == manifest["metrics"]["knn_top1"]
    assert reported["knn_queries"] == manifest["metrics"]["pixel_knn_queries"] == 363
    history = stack.store.history(job.id)
    assert [(r["round"], r["epoch"]) for r in history] == [(0, 1), (0, 2), (1, 1), (1, 2)]


def test_kill9_of_the_worker_resumes_on_a_new_one_with_the_same_result(stack):
    worker = stack.start_worker()
    config = {"rounds": 2, "epochs_per_round": 3, "device": "cpu"}  # bit for bit: on CPU
    job = stack.submit(**config)
    stack.wait(job.id, lambda j: j.progress.get("global_epoch", 0) >= 2, 180, "epoch 2")
    worker.kill9()
    lost = stack.store.get(job.id)
    assert lost.status == RUNNING  # nobody has noticed yet: the record says what it knows
    stack.start_worker()
    first = _resumed_run(stack, job.id, lost.worker, after=2)
    done = stack.finished(job.id, 300)
    assert done.status == SUCCEEDED, done.error
    assert done.attempts == 2 and "lost" in (done.note or "")
    history = stack.store.history(job.id)
    assert [r["global_epoch"] for r in history] == list(range(1, 7))  # none lost
    _epochs_by_run(history, first)  # none run twice
    assert history[-1]["attempt"] == 2
    # The same job run without interruption ends with identical weights.
    again = stack.finished(stack.submit(**config).id, 300)
    assert again.status == SUCCEEDED
    a, b = _weights(stack, job.id), _weights(stack, again.id)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert done.progress["metrics"]["knn_top1"] == again.progress["metrics"]["knn_top1"]


def test_cancel_running_and_queued_jobs_through_the_api(stack):
    """DELETE /jobs/{id} stops a running job between batches, not at the end of its epoch.
    Small batches make an epoch many batches long, so the two differ in kind: the job ends
    mid-epoch, with no epoch finished after the cancel, sooner than one epoch takes. (160
    batches: an epoch lasts seconds even on a fast machine, well past the heartbeat that
    carries the cancel, HEARTBEAT_S = 0.3 s here.)"""
    api = stack.api()
    tiny = write_tiny_dataset(stack.settings.data_root, train=1280)
    stack.start_worker()
    running = stack.submit(tiny, **TINY, rounds=1, epochs_per_round=50, batch_size=8)
    queued = stack.submit(tiny, **TINY)
    answer = api.delete(f"/jobs/{queued.id}")
    assert answer.status_code == 202 and answer.json()["status"] == CANCELED, answer.text
    # Just after epoch 1 ends: epoch 2 has all its batches ahead of it.
    first = stack.wait(running.id, lambda j: j.progress.get("global_epoch") == 1, 300,
                       "epoch 1")
    assert first.status == RUNNING
    asked = time.time()
    answer = api.delete(f"/jobs/{running.id}")
    assert answer.status_code == 202 and answer.json()["cancel_requested"], answer.text
    done = stack.finished(running.id, 120)
    assert done.status == CANCELED, done
    took = done.finished_at - asked
    history = stack.store.history(running.id)
    assert [r["global_epoch"] for r in history] == [1], "an epoch ended after the cancel"
    epoch1 = history[0]
    epoch_s = epoch1["time_data_s"] + epoch1["time_backbone_s"] + epoch1["time_bank_s"]
    state = torch.load(stack.settings.runs_root / running.id / "checkpoint.pt",
                       weights_only=False)
    batches = -(-len(state["order"]) // 8)
    assert batches == 160  # an epoch is many batches long
    # Stopped inside epoch 2, after at least one of its batches and before its last.
    assert (state["round"], state["epoch"]) == (0, 1) and 0 < state["step"] < batches, (
        state["step"], batches)
    assert took < epoch_s, f"cancel took {took:.2f} s, one epoch {epoch_s:.2f} s"
    never = stack.store.get(queued.id)
    assert never.status == CANCELED and never.started_at is None and never.attempts == 0
    # The worker goes on with the next job.
    assert stack.finished(stack.submit(tiny, **TINY).id).status == SUCCEEDED


def test_jobs_on_one_worker_run_one_after_the_other(redis_stack):
    redis_stack.start_worker()
    first, second = redis_stack.submit(), redis_stack.submit()
    a, b = redis_stack.finished(first.id), redis_stack.finished(second.id)
    assert a.status == b.status == SUCCEEDED
    assert b.started_at >= a.finished_at


def test_failing_job_ends_failed_and_the_next_one_runs(redis_stack):
    corrupt = redis_stack.settings.data_root / "digits" / "train" / "3" / "broken.png"
    corrupt.write_bytes(b"\x89PNG not really")
    redis_stack.start_worker()
    bad = redis_stack.submit(on_corrupt="fail")
    good = redis_stack.submit()
    failed = redis_stack.finished(bad.id)
    assert failed.status == FAILED and "train/3/broken.png" in failed.error
    done = redis_stack.finished(good.id)
    assert done.status == SUCCEEDED
    # The default (skip) leaves the file out and says which, in the job and in the bundle.
    skipped = [{"id": "train/3/broken.png", "reason": "not a readable image (cannot identify "
                "image file)"}]
    assert done.progress["metrics"]["skipped"] == skipped
    bundle = redis_stack.settings.models_root / done.model_version
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["metrics"]["skipped_items"] == 1 and manifest["metrics"]["skipped"] == skipped
    assert json.loads((bundle / "skipped.json").read_text()) == skipped


def test_invalid_jobs_are_refused_before_they_are_queued(redis_stack):
    with pytest.raises(ConfigError, match="'lr'"):
        redis_stack.submit(lr=-1)
    with pytest.raises(ConfigError, match="'colour'"):
        redis_stack.submit(colour="red")
    with pytest.raises(DatasetError, match="does not exist"):
        redis_stack.submit(dataset="nope")
    with pytest.raises(DatasetError, match="does not exist"):
        redis_stack.submit(dataset="../digits")
    with pytest.raises(ConfigError, match="neighbours"):
        redis_stack.submit(neighbours=5000)
    assert redis_stack.store.list()[1] == 0


def test_worker_shutdown_requeues_its_job_and_another_worker_finishes_it(redis_stack):
    first = redis_stack.start_worker()
    job = redis_stack.submit(rounds=2, epochs_per_round=3)
    running = redis_stack.wait(job.id, lambda j: j.progress.get("global_epoch", 0) >= 1,
                               what="epoch 1")
    first.stop(timeout=120)  # SIGTERM: a warm shutdown, as docker stop does
    requeued = redis_stack.store.get(job.id)
    assert requeued.status == QUEUED and "shut down" in requeued.note
    assert requeued.attempts == 0  # a shutdown is not a failed attempt
    redis_stack.start_worker()
    resumed_at = _resumed_run(redis_stack, job.id, running.worker, after=1)
    done = redis_stack.finished(job.id)
    assert done.status == SUCCEEDED and done.attempts == 1
    history = redis_stack.store.history(job.id)
    assert [r["global_epoch"] for r in history] == list(range(1, 7))
    _epochs_by_run(history, resumed_at)
    assert history[-1]["attempt"] == 1

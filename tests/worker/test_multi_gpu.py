"""A job on several processes through the real API, queue and worker: the worker owning two
"GPUs" (CPU processes over Gloo here) takes a gpus=2 job, launches both processes and publishes;
a job asking for more GPUs than any live worker owns is refused at submission."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings
from state.jobs import SUCCEEDED
from tests.processes import wait_for
from tests.worker.conftest import SMALL, TINY, write_tiny_dataset

PROBLEM = "application/problem+json"


def test_a_worker_owning_two_gpus_runs_a_two_process_job_and_larger_ones_are_refused(stack):
    s = stack.settings
    name = write_tiny_dataset(s.data_root)
    # No enqueue given: the API sends jobs as deployed, gpus=2 ones to their own queue.
    api = TestClient(create_app(
        ServiceSettings(data_root=s.data_root, models_root=s.models_root,
                        state_root=s.state_root, broker_url=s.broker_url,
                        key_prefix=s.key_prefix, device="cpu",
                        allowed_hosts="testserver"), store=stack.store))
    config = SMALL | TINY | {"gpus": 2, "precision": "fp32"}

    # Before any worker advertised two: refused.
    early = api.post("/train", json={"dataset": name, "config": config})
    assert early.status_code == 422 and early.headers["content-type"].startswith(PROBLEM)

    stack.start_worker(WORKER_GPUS="2", CAPACITY_TTL_S="5")
    wait_for(lambda: stack.store.largest_capacity() == 2, 120, "the worker to advertise 2 GPUs")

    too_many = api.post("/train", json={"dataset": name, "config": config | {"gpus": 3}})
    assert too_many.status_code == 422, too_many.text
    assert too_many.headers["content-type"].startswith(PROBLEM)
    assert "gpus=3" in too_many.json()["detail"] and "owns 2" in too_many.json()["detail"]
    nodes = api.post("/train", json={"dataset": name, "config": config | {"nodes": 2}})
    assert nodes.status_code == 422 and "torchrun" in nodes.json()["detail"]

    answer = api.post("/train", json={"dataset": name, "config": config})
    assert answer.status_code == 202, answer.text
    done = stack.finished(answer.json()["id"])
    assert done.status == SUCCEEDED, done.error
    assert done.model_version and done.progress["metrics"]["processes"] == 2
    run = s.runs_root / done.id
    assert (run / "rank_logs").is_dir() and (run / "encoder.pt").exists()
    assert api.get(f"/jobs/{done.id}").json()["model_version"] == done.model_version

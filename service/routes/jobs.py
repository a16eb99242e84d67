from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from service.auth import Admin, Reader
from service.bodies import JSON, read_json, require_media
from service.deps import EnqueueDep, SettingsDep, StoreDep
from service.errors import ProblemError, conflict, not_found, not_ready, problems
from service.limits import JSON_BASE
from service.schemas import JOB_ID, JobProgress, JobPublic, JobsPublic, JobStatus, TrainRequest
from service.settings import ServiceSettings
from state.jobs import CANCELED, RUNNING, TERMINAL, Job
from trainer.label_free import with_measure
from worker.submit import (
    NoSuchDataset,
    NotQueued,
    NoWorkerCanRun,
    UnfitConfig,
    UnusableDataset,
    WeightsNotInPlace,
    submit,
)

router = APIRouter(tags=["jobs"])
JOB_PATH = Path(pattern=JOB_ID, description="A job id.")


def sorted_milestones(config: dict[str, Any]) -> dict[str, Any]:
    """Milestones may come in any order here; they are kept sorted."""
    milestones = config.get("lr_milestones")
    if isinstance(milestones, list) and all(
            isinstance(m, (int, float)) and not isinstance(m, bool) for m in milestones):
        return config | {"lr_milestones": sorted(milestones)}
    return config


@contextmanager
def submission_problems(dataset: str) -> Iterator[None]:
    """The submission gate's refusals as answers: a config invalid on its own is the
    ConfigError handler's 422 (service.errors)."""
    try:
        yield
    except NoSuchDataset:
        raise not_found(f"no dataset {dataset!r}") from None
    except NoWorkerCanRun as exc:
        raise ProblemError(422, "No Worker Can Run It", exc.message) from None
    except WeightsNotInPlace as exc:
        raise ProblemError(409, "Pretrained Weights Not In Place", str(exc)) from None
    except UnfitConfig as exc:
        # Refused initial weights (a wrong file, another backbone's) are not the dataset's fault.
        title = "Unusable Initial Weights" if exc.key == "init_from" else "Unusable Dataset"
        raise ProblemError(409, title, str(exc)) from None
    except UnusableDataset as exc:
        raise ProblemError(409, "Unusable Dataset", str(exc)) from None
    except NotQueued as exc:
        raise not_ready("the job queue is unreachable; the job was not started") from exc


def _submit(settings: ServiceSettings, store: StoreDep, enqueue: EnqueueDep,
            body: TrainRequest) -> Job:
    with submission_problems(body.dataset):
        return submit(store, settings, enqueue, body.dataset, sorted_milestones(body.config),
                      body.promote, strict=True)


@router.post("/train", status_code=202, response_model=JobPublic, dependencies=[Admin],
             responses=problems(401, 403, 404, 409, 413, 415, 422, 503),
             summary="Start a training job on a dataset",
             description="The config is checked and the dataset scanned before the job is "
             "queued: 422 for an unknown key or a bad value, 404 for a dataset that does not "
             "exist, 409 for one that cannot be trained with this config (no images, fewer "
             "images than `neighbours`) or initial weights that are unusable or, for "
             "`init_from: imagenet`, neither under DATA_ROOT/.pretrained/ nor downloadable "
             "(the problem names the file). Follow the job at the returned Location.")
async def train(request: Request, response: Response, settings: SettingsDep,
                store: StoreDep, enqueue: EnqueueDep) -> JobPublic:
    require_media(request, JSON)
    body = await read_json(request, TrainRequest, JSON_BASE)
    job = await run_in_threadpool(_submit, settings, store, enqueue, body)
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobPublic.of(job)


@router.get("/jobs", response_model=JobsPublic, dependencies=[Reader],
            responses=problems(401, 403, 422), summary="Jobs, newest first")
def list_jobs(store: StoreDep, offset: int = Query(0, ge=0, le=10**9),
              limit: int = Query(50, ge=1, le=500),
              status: JobStatus | None = None) -> JobsPublic:
    jobs, total = store.list(offset, limit, status)
    return JobsPublic(data=[JobPublic.of(j) for j in jobs], count=total)


@router.get("/jobs/{job_id}", response_model=JobPublic, dependencies=[Reader],
            responses=problems(401, 403, 404, 422),
            summary="A job's status, progress and result")
def get_job(store: StoreDep, job_id: str = JOB_PATH) -> JobPublic:
    return JobPublic.of(store.require(job_id))


@router.get("/jobs/{job_id}/progress", response_model=JobProgress, dependencies=[Reader],
            responses=problems(401, 403, 404, 422), summary="Every epoch record of a job so far")
def job_progress(store: StoreDep, job_id: str = JOB_PATH) -> JobProgress:
    store.require(job_id)
    return JobProgress(id=job_id, epochs=[with_measure(r) for r in store.history(job_id)])


@router.delete("/jobs/{job_id}", status_code=202, response_model=JobPublic,
               dependencies=[Admin], responses=problems(401, 403, 404, 409, 422),
               summary="Cancel a job",
               description="A queued job is canceled at once and never starts. A running job "
               "stops after its current batch (or between its last phases), keeps its last "
               "checkpoint and ends as canceled, its model unpublished. Once a job has "
               "committed to publishing its model, or has ended, the answer is 409.")
def cancel_job(store: StoreDep, job_id: str = JOB_PATH) -> JobPublic:
    before = store.require(job_id)
    if before.status in TERMINAL:
        raise conflict(f"job {job_id} already {before.status}")
    job = store.request_cancel(job_id)
    if job.status != CANCELED and not job.cancel_requested:  # past its point of no return
        raise conflict(f"job {job_id} already "
                       f"{'publishing its model' if job.status == RUNNING else job.status}")
    return JobPublic.of(job)

from __future__ import annotations

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from service.auth import Admin, Reader
from service.deps import EnqueueDep, SettingsDep, StoreDep
from service.errors import conflict, not_ready, problems
from service.schemas import JobProgress, JobPublic, JobsPublic, JobStatus, TrainRequest
from worker.jobs import CANCELED, FAILED, QUEUED, RUNNING, TERMINAL
from worker.submit import submit

router = APIRouter(tags=["jobs"])


@router.post("/train", status_code=202, response_model=JobPublic, dependencies=[Admin],
             responses=problems(401, 403, 422, 503),
             summary="Start a training job on a dataset",
             description="The config is checked and the dataset scanned before the job is "
             "queued: an unknown key, a bad value or an unusable dataset is refused with 422. "
             "Follow the job at the returned Location.")
async def train(body: TrainRequest, response: Response, settings: SettingsDep,
                store: StoreDep, enqueue: EnqueueDep) -> JobPublic:
    def queue_it(job_id: str) -> None:
        try:
            enqueue(job_id)
        except Exception as exc:
            store.transition(job_id, {QUEUED}, FAILED, error=f"could not be queued: {exc}")
            raise not_ready("the job queue is unreachable; the job was not started") from exc

    job = await run_in_threadpool(submit, store, settings, queue_it, body.dataset, body.config,
                                  body.promote)
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
            responses=problems(401, 403, 404), summary="A job's status, progress and result")
def get_job(job_id: str, store: StoreDep) -> JobPublic:
    return JobPublic.of(store.require(job_id))


@router.get("/jobs/{job_id}/progress", response_model=JobProgress, dependencies=[Reader],
            responses=problems(401, 403, 404), summary="Every epoch record of a job so far")
def job_progress(job_id: str, store: StoreDep) -> JobProgress:
    store.require(job_id)
    return JobProgress(id=job_id, epochs=store.history(job_id))


@router.delete("/jobs/{job_id}", status_code=202, response_model=JobPublic,
               dependencies=[Admin], responses=problems(401, 403, 404, 409),
               summary="Cancel a job",
               description="A queued job is canceled at once and never starts. A running job "
               "stops after its current batch (or between its last phases), keeps its last "
               "checkpoint and ends as canceled, its model unpublished. Once a job has "
               "committed to publishing its model, or has ended, the answer is 409.")
def cancel_job(job_id: str, store: StoreDep) -> JobPublic:
    before = store.require(job_id)
    if before.status in TERMINAL:
        raise conflict(f"job {job_id} already {before.status}")
    job = store.request_cancel(job_id)
    if job.status != CANCELED and not job.cancel_requested:  # past its point of no return
        raise conflict(f"job {job_id} already "
                       f"{'publishing its model' if job.status == RUNNING else job.status}")
    return JobPublic.of(job)

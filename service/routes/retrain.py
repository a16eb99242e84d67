"""A dataset's retrain policy: read it with what it would do now, and set it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from service.auth import Admin, Reader
from service.bodies import JSON, read_json, require_media
from service.deps import SettingsDep, StoreDep
from service.errors import not_found, problems
from service.limits import JSON_BASE
from service.retrain import status
from service.routes.jobs import sorted_milestones, submission_problems
from service.schemas import DATASET_NAME, Strict
from state.datasets import dataset_path
from state.retrain import DEFAULT_CONFIG, RetrainPolicy
from trainer.errors import DatasetError
from worker.submit import check_job

router = APIRouter(tags=["datasets"])
NAME = PathParam(pattern=DATASET_NAME, description="A dataset name.")


class RetrainPolicyIn(Strict):
    enabled: bool = Field(default=False, description="Retrain when enough has changed.")
    changed_fraction: float = Field(
        default=0.25, gt=0, le=1,
        description="Retrain once the items added, replaced or deleted since the current "
        "model's training snapshot (change-log entries) reach this share of its items.")
    config: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT_CONFIG),
        description="Config overrides of the retrain job, over the current model's own config "
        "(TrainConfig keys); the job always starts from the current model (init_from).")
    backoff_s: float = Field(default=3600.0, ge=0, le=30 * 86400,
                             description="After a failed retrain, wait this long to try again.")


class RetrainPublic(BaseModel):
    dataset: str
    enabled: bool
    changed_fraction: float
    config: dict[str, Any]
    backoff_s: float
    current_version: str | None = Field(description="The model a retrain would start from.")
    changed: int = Field(description="Change-log entries since its training snapshot.")
    items: int = Field(description="The current model's items.")
    fraction: float
    due: bool = Field(description="Whether the next check enqueues a retrain.")
    reason: str = Field(description="Why it is or is not due.")
    last_job: str | None
    last_enqueued_at: float | None
    last_error: str | None


def _public(request: Request, settings: SettingsDep, store: StoreDep,
            dataset: str) -> RetrainPublic:
    try:
        dataset_path(settings, dataset)  # the data root's one rule for where a dataset is
    except DatasetError:
        raise not_found(f"no dataset {dataset!r}") from None
    now = status(settings, store, request.app.state.changes, dataset)
    p, d = now.policy, now.decision
    return RetrainPublic(dataset=dataset, enabled=p.enabled, changed_fraction=p.changed_fraction,
                         config=p.config, backoff_s=p.backoff_s, current_version=now.version,
                         changed=d.changed, items=d.items, fraction=d.fraction, due=d.due,
                         reason=d.reason, last_job=p.last_job,
                         last_enqueued_at=p.last_enqueued_at, last_error=p.last_error)


@router.get("/datasets/{name}/retrain", response_model=RetrainPublic, dependencies=[Reader],
            responses=problems(401, 403, 404, 422),
            summary="The dataset's retrain policy, and whether a retrain is due now")
def get_retrain(request: Request, settings: SettingsDep, store: StoreDep,
                name: str = NAME) -> RetrainPublic:
    return _public(request, settings, store, name)


@router.put("/datasets/{name}/retrain", response_model=RetrainPublic, dependencies=[Admin],
            responses=problems(401, 403, 404, 409, 413, 415, 422),
            summary="Set the dataset's retrain policy (off by default)",
            description="With the policy on, once the change-log entries since the current "
            "model's training snapshot reach `changed_fraction` of its items, a job warm-"
            "started from the current model is enqueued (at most one at a time; after a "
            "failure, not again before `backoff_s`); the promotion gate decides its fate.")
async def put_retrain(request: Request, settings: SettingsDep, store: StoreDep,
                      name: str = NAME) -> RetrainPublic:
    require_media(request, JSON)
    body = await read_json(request, RetrainPolicyIn, JSON_BASE)
    config = sorted_milestones(body.config)

    def save() -> RetrainPublic:
        # The job it would start, checked as POST /train checks one (the current model's own
        # config under it is checked again when the retrain is submitted).
        with submission_problems(name):
            check_job(store, settings, name, config, strict=True)
        kept = RetrainPolicy.from_dict(store.get_policy(name))  # what the checks recorded
        policy = RetrainPolicy(**(body.model_dump() | {"config": config}),
                               last_job=kept.last_job,
                               last_enqueued_at=kept.last_enqueued_at, last_seq=kept.last_seq)
        store.put_policy(name, policy.to_dict())
        return _public(request, settings, store, name)

    return await run_in_threadpool(save)

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from service.deps import MetricsDep, RegistryDep, StoreDep
from service.errors import ProblemError, problems
from service.schemas import Health
from trainer.config import TrainConfig

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=problems(503),
            summary="Readiness: a model is loaded and the job store and broker answer")
async def readyz(request: Request, registry: RegistryDep, store: StoreDep) -> Health:
    checks: dict[str, Any] = {}
    served = registry.current
    checks["model"] = served.version if served else None
    if registry.last_error:
        checks["model_error"] = registry.last_error
    checks["store"] = await run_in_threadpool(_probe, store.ping)
    checks["broker"] = await run_in_threadpool(_probe, request.app.state.broker_check)
    failed = [name for name in ("model", "store", "broker") if checks[name] in (None, False)]
    if failed:
        raise ProblemError(503, "Service Unavailable",
                           f"not ready: {', '.join(failed)} unavailable"
                           + (" (no model has been published yet)" if "model" in failed else ""),
                           errors=[{"check": k, "value": v} for k, v in checks.items()],
                           headers={"Retry-After": "5"})
    return Health(status="ready", checks=checks)


def _probe(check: Any) -> bool:
    try:
        check()
        return True
    except Exception:
        return False


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/config", summary="Every trainer config key with its default and meaning")
def config_keys() -> dict[str, dict[str, Any]]:
    return TrainConfig.documentation()

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from service.auth import MetricsReader, Public, Reader, may_read
from service.deps import CollectionsDep, MetricsDep
from service.errors import ProblemError, problems
from service.probes import CachedProbe
from service.schemas import Health
from trainer.config import TrainConfig

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, dependencies=[Public],
            summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


async def _probe(probe: CachedProbe) -> bool:
    cached = probe.cached()
    return cached if cached is not None else await run_in_threadpool(probe.check)


@router.get("/readyz", response_model=Health, dependencies=[Public], responses=problems(503),
            summary="Readiness: a model is loaded and the job store and broker answer",
            description="Open to probes. With READ_API_KEY set, only a caller with the read key "
            "sees the checks (model version, store, broker); the others get the status alone. "
            "The store and broker answers are cached for a few seconds.")
async def readyz(request: Request, collections: CollectionsDep) -> Health:
    checks: dict[str, Any] = {}
    try:
        registry = collections.registry(collections.resolve(None))
        served = registry.current
        checks["model"] = served.version if served else None
    except ProblemError:  # several collections and no default: ready once each is loaded
        registry = collections.empty
        loaded = collections.loaded()
        checks["model"] = ", ".join(f"{name}={s.version}" for name, s in loaded.items()
                                    if s is not None) if all(loaded.values()) else None
    if registry.last_error:
        checks["model_error"] = registry.last_error  # a version name, never a path
    checks["store"] = await _probe(request.app.state.store_probe)
    checks["broker"] = await _probe(request.app.state.broker_probe)
    detailed = may_read(request)
    failed = [name for name in ("model", "store", "broker") if checks[name] in (None, False)]
    if failed:
        raise ProblemError(503, "Service Unavailable",
                           f"not ready: {', '.join(failed)} unavailable"
                           + (" (no model has been published yet)"
                              if detailed and "model" in failed and not registry.last_error
                              else ""),
                           errors=[{"check": k, "value": v} for k, v in checks.items()]
                           if detailed else None,
                           headers={"Retry-After": "5"})
    return Health(status="ready", checks=checks if detailed else {})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            dependencies=[MetricsReader],
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
                       **problems(401, 403)})
async def metrics(metrics: MetricsDep) -> Response:
    body = await run_in_threadpool(metrics.render)  # the job counts query the store
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/config", dependencies=[Reader], responses=problems(401, 403),
            summary="Every trainer config key with its default and meaning",
            description="The same keys as the TrainConfig schema of POST /train.")
async def config_keys() -> dict[str, dict[str, Any]]:
    return TrainConfig.documentation()

"""Shared resources as dependencies: the app builds them once (app.state); tests may replace
them. The providers are `async def` on purpose: FastAPI runs a plain `def` dependency in its
thread pool, a thread hop per dependency per request. FastAPI resolves every dependency of a
route on every request (about 20 us each on a 2-core machine), so the query routes, which
answer hundreds of requests a second, take their shared parts as one (`QueryToolsDep`)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response

from service import answered_by
from service.batcher import EmbedBatcher
from service.collections import Collections
from service.decoding import QueryDecoder
from service.errors import not_found, not_ready
from service.limits import Limits
from service.metrics import Metrics
from service.registry import (
    BrokenVersion,
    ModelRegistry,
    NoModel,
    Served,
    TooManyLoads,
    UnknownVersion,
)
from service.schemas import QueryModels
from service.search_lane import SearchLane
from service.settings import ServiceSettings
from state.jobs import JobStore


async def _settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


async def _store(request: Request) -> JobStore:
    return request.app.state.store


async def _collections(request: Request) -> Collections:
    return request.app.state.collections


async def _collection(request: Request) -> str | None:
    """The collection a request serves: the one its path names, else the default
    (service/collections.py has the rule)."""
    return request.app.state.collections.resolve(request.path_params.get("collection"))


async def _registry(request: Request) -> AsyncIterator[ModelRegistry]:
    """The registry of the collection a request serves (as `_collection`, called here rather than
    as a dependency of its own), held until the request is done: the memory budget never
    unloads a collection under a request (service/collections.py)."""
    with request.app.state.collections.using(await _collection(request)) as registry:
        yield registry


async def _bulk_batcher(request: Request) -> EmbedBatcher:
    return request.app.state.bulk_batcher


async def _metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def _limits(request: Request) -> Limits:
    return request.app.state.limits


async def _bodies(request: Request) -> QueryModels:
    return request.app.state.bodies


async def _decoder(request: Request) -> QueryDecoder:
    return request.app.state.decoder


async def _enqueue(request: Request) -> Callable[[str], None]:
    return request.app.state.enqueue


@dataclass(frozen=True)
class QueryTools:
    """What the query routes (/embed, /search, /classify, /neighbours) share, as one dependency
    (FastAPI resolves each dependency of a route on every request)."""

    limits: Limits
    bodies: QueryModels
    batcher: EmbedBatcher
    decoder: QueryDecoder
    lane: SearchLane


async def _query_tools(request: Request) -> QueryTools:
    return request.app.state.query_tools


SettingsDep = Annotated[ServiceSettings, Depends(_settings)]
StoreDep = Annotated[JobStore, Depends(_store)]
CollectionDep = Annotated[str | None, Depends(_collection)]
CollectionsDep = Annotated[Collections, Depends(_collections)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
BulkBatcherDep = Annotated[EmbedBatcher, Depends(_bulk_batcher)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
LimitsDep = Annotated[Limits, Depends(_limits)]
BodiesDep = Annotated[QueryModels, Depends(_bodies)]
DecoderDep = Annotated[QueryDecoder, Depends(_decoder)]
EnqueueDep = Annotated[Callable[[str], None], Depends(_enqueue)]
QueryToolsDep = Annotated[QueryTools, Depends(_query_tools)]


async def served_model(registry: ModelRegistry, version: str | None) -> Served:
    """The bundle this request will use from start to end (see registry)."""
    try:
        served = await registry.get(version)
    except NoModel:
        if registry.collection:  # a collection exists once a version is published
            raise not_ready(
                f"collection {registry.collection!r} has no current model: its versions are "
                "candidates the promotion gate kept out (GET /models lists them with the "
                "verdicts); promote one (POST /models/{version}/promote) or name one with "
                "model_version") from None
        raise not_ready("no model has been published yet; train one with POST /train") from None
    except UnknownVersion:
        raise not_found(f"no model version {version!r}") from None
    except (BrokenVersion, TooManyLoads) as exc:
        raise not_ready(str(exc), retry_after_s=max(1, math.ceil(exc.retry_in_s))) from None
    answered_by.note(served)
    return served


def stamp(response: Response, served: Served) -> None:
    """Name what answered (service/answered_by.py)."""
    response.headers.update(answered_by.headers_of(served))

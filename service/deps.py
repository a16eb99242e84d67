"""Shared resources as dependencies: the app builds them once (app.state); tests may replace
them. The providers are `async def` on purpose: FastAPI runs a plain `def` dependency in its
thread pool, a thread hop per dependency per request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from service.batcher import EmbedBatcher
from service.errors import not_ready
from service.metrics import Metrics
from service.registry import ModelRegistry, Served
from service.settings import ServiceSettings
from worker.jobs import JobStore


async def _settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


async def _store(request: Request) -> JobStore:
    return request.app.state.store


async def _registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def _batcher(request: Request) -> EmbedBatcher:
    return request.app.state.batcher


async def _metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def _enqueue(request: Request) -> Callable[[str], None]:
    return request.app.state.enqueue


SettingsDep = Annotated[ServiceSettings, Depends(_settings)]
StoreDep = Annotated[JobStore, Depends(_store)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
BatcherDep = Annotated[EmbedBatcher, Depends(_batcher)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
EnqueueDep = Annotated[Callable[[str], None], Depends(_enqueue)]


def served_model(registry: ModelRegistry, version: str | None) -> Served:
    """The bundle this request will use from start to end (see registry)."""
    try:
        return registry.get(version)
    except LookupError:
        raise not_ready("no model has been published yet; train one with POST /train") from None

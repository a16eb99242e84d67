"""The FastAPI app. `create_app()` wires settings, job store, model registry, batcher and
metrics into app.state; routes live in service/routes/, one module per resource."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import Depends, FastAPI
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import console, contract, errors
from service.batcher import BULK_NICE, EmbedBatcher, cpu_workers
from service.collections import Collections
from service.decoding import QueryDecoder
from service.deps import QueryTools
from service.errors import problems
from service.limits import Gate, Limits
from service.memory_budget import budget_bytes
from service.metrics import Metrics, MetricsMiddleware
from service.probes import BrokerConnection, CachedProbe
from service.registry import ModelRegistry
from service.retrain import RetrainWatcher
from service.routes import (
    classify,
    collection_keys,
    compare,
    datasets,
    docs,
    duplicates,
    embedding_map,
    export,
    health,
    images,
    items,
    jobs,
    models,
    retrain,
    retrieval,
)
from service.routes import collections as collection_routes
from service.schemas import query_models
from service.search_lane import SearchLane
from service.settings import ServiceSettings, get_service_settings
from service.site_guard import SiteGuard
from service.uploads import sweep_stale_uploads
from state.changes import ChangeLog
from state.datasets import dataset_folder
from state.jobs import PROMOTE_GATE, Job, JobStore
from state.stores import open_changes, open_store
from trainer.device import cpu_count
from worker.submit import submit

log = logging.getLogger(__name__)

DESCRIPTION = """
Image embeddings learned without labels by **Anchor Neighbourhood Discovery** (AND,
Huang et al., ICML 2019), trained on your own images and served with a FAISS index.

1. `POST /datasets`: an archive of images (class folders optional);
2. `POST /train`;
3. follow `GET /jobs/{id}`;
4. once published: `POST /embed`, `GET /neighbours/{id}`, `POST /search`, `POST /classify`.

Errors are `application/problem+json` (RFC 9457). Mutating routes need the admin key, read
routes the read key when one is set: `Authorization: Bearer <key>`.
"""


class UnsafeSettings(RuntimeError):
    pass


class _BodyLimit:
    """A request-body limit chosen by path and media type (archives may be large, queries may
    not; see service/limits.py), answered with a problem: up front from Content-Length, or as
    soon as a streamed body passes it."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str, str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        limit = self.limit_for(scope["path"], media)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            response = errors.problem_response(Request(scope), 413, "Content Too Large",
                                               f"the request body exceeds {limit} bytes")
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise errors.too_large(f"the request body exceeds {limit} bytes")
            return message

        await self.app(scope, limited, send)


def _log_access(settings: ServiceSettings) -> None:
    """Say at start who may read and who may write."""
    if settings.admin_api_key is None:
        log.warning("ADMIN_API_KEY is not set: mutating routes are open (development only)")
    if settings.read_api_key is not None:
        log.info("read routes need READ_API_KEY (or the admin key)")
    elif settings.production:  # only with ALLOW_OPEN_READS: key_problems refuses otherwise
        log.warning("READ_API_KEY is not set: read routes are open to anyone (ALLOW_OPEN_READS"
                    "=true), dataset images included")
    else:
        log.warning("READ_API_KEY is not set: read routes are open (development)")


def _celery_enqueue(settings: ServiceSettings) -> Callable[[str], None]:
    from worker.app import make_celery, send_job

    return partial(send_job, make_celery(settings), settings, open_store(settings))


def create_app(settings: ServiceSettings | None = None, *, store: JobStore | None = None,
               enqueue: Callable[[str], None] | None = None,
               changes: ChangeLog | None = None) -> FastAPI:
    settings = settings or get_service_settings()
    if settings.production and settings.key_problems():
        raise UnsafeSettings("refusing to start in production: "
                             + "; ".join(settings.key_problems()))
    _log_access(settings)
    settings.ensure_dirs()
    store = store or open_store(settings)
    changes = changes or open_changes(settings)
    limits = Limits.of(settings)
    metrics = Metrics(store.counts)
    workers = settings.embed_workers or cpu_workers(settings.device)

    def registry(collection: str) -> ModelRegistry:
        return ModelRegistry(settings.models_root, settings.device, settings.model_poll_s,
                             on_swap=partial(metrics.set_model, collection),
                             cache_size=settings.model_cache_size,
                             loads_per_min=settings.model_loads_per_min,
                             on_load=partial(metrics.count_load, collection), changes=changes,
                             dataset_root=lambda name: dataset_folder(settings, name),
                             engine=settings.inference_engine,
                             # each inference thread's share of the cores (as batcher.py gives
                             # torch), so that the threads together use each core once
                             threads=max(1, cpu_count() // workers), collection=collection)

    collections = Collections(settings.models_root, registry, settings.default_collection,
                              settings.model_poll_s, budget_bytes(settings.serve_memory_mb),
                              on_unload=metrics.count_unload)
    metrics.watch_collections(collections.loaded_bytes)
    batcher = EmbedBatcher(settings.embed_max_batch, settings.embed_max_wait_ms / 1000,
                           max_queued_images=settings.embed_max_queued_images,
                           on_batch=metrics.embed_batch.observe,
                           workers=workers)
    # Adds to the collection: large batches at once, on threads that queries preempt.
    bulk_batcher = EmbedBatcher(settings.embed_max_batch, 0.0,
                                max_queued_images=settings.embed_max_queued_images,
                                on_batch=metrics.embed_batch.observe, workers=batcher.workers,
                                nice=BULK_NICE, name="bulk-embed")
    decoder = QueryDecoder(settings.max_query_pixels, settings.decode_concurrency)
    metrics.watch(decoder, batcher)
    queue = enqueue or _celery_enqueue(settings)

    def submit_retrain(dataset: str, config: dict[str, Any]) -> Job:
        return submit(store, settings, queue, dataset, config, PROMOTE_GATE)

    retrainer = RetrainWatcher(settings, store, changes, submit_retrain,
                               settings.retrain_check_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        swept = sweep_stale_uploads(settings.data_root)
        if swept:
            log.warning("removed %d upload folders left by interrupted uploads", len(swept))
        decoder.start()
        collections.start()
        batcher.start()
        bulk_batcher.start()
        retrainer.start()
        try:
            yield
        finally:
            retrainer.stop()
            bulk_batcher.stop()
            batcher.stop()
            collections.stop()

    # The documentation routes are the app's own (service/routes/docs.py), with their guard.
    app = FastAPI(title="AND embedding retrieval", version="0.1.0", description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.limits = limits
    app.state.archive_adds = Gate(settings.max_concurrent_archive_adds)
    app.state.bodies = query_models(limits)
    app.state.store = store
    app.state.changes = changes
    app.state.collections = collections
    app.state.batcher = batcher
    app.state.bulk_batcher = bulk_batcher
    app.state.decoder = decoder
    app.state.query_tools = QueryTools(limits, app.state.bodies, batcher, decoder, SearchLane())
    app.state.metrics = metrics
    app.state.enqueue = queue
    app.state.retrainer = retrainer
    app.state.store_probe = CachedProbe(store.ping)
    app.state.broker_probe = CachedProbe(BrokerConnection(settings))
    errors.install(app, unavailable=store.transient_errors)
    # The routers, each with whether it serves per collection: then at the root for the default
    # collection and under each collection's name, one route body for both (service/deps.py
    # resolves the collection from the path). A request is matched against the routers in
    # order, so the query routes (hundreds of requests a second) come first; no other route's
    # path can match theirs.
    routers = [(module, True) for module in (retrieval, classify)]
    routers += [(module, False) for module in (health, datasets, retrain, jobs)]
    routers += [(collection_routes, False), (collection_keys, False)]
    routers += [(module, True) for module in (models, compare, export, duplicates, items,
                                              images, embedding_map)]
    for module, per_collection in routers:
        if not per_collection:
            app.include_router(module.router)
            continue
        app.include_router(module.router, responses=problems(409))
        app.include_router(module.router, prefix=collection_routes.PREFIX,
                           dependencies=[Depends(collection_routes.collection_path)],
                           responses=problems(404, 422))
    console.install(app)
    if settings.api_docs != "off":
        app.include_router(docs.router)
    contract.install(app)

    app.add_middleware(_BodyLimit, limit_for=limits.body_limit)
    app.add_middleware(SiteGuard, settings=settings)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app

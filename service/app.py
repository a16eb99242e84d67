"""The FastAPI app. `create_app()` wires settings, job store, model registry, batcher and
metrics into app.state; routes live in service/routes/, one module per resource."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import errors
from service.batcher import EmbedBatcher, cpu_workers
from service.metrics import Metrics, MetricsMiddleware
from service.registry import ModelRegistry
from service.routes import classify, datasets, health, jobs, models, retrieval
from service.settings import ServiceSettings, get_service_settings
from worker.jobs import JobStore
from worker.stores import open_store

log = logging.getLogger(__name__)

DESCRIPTION = """
Image embeddings learned without labels by **Anchor Neighbourhood Discovery** (AND,
Huang et al., ICML 2019), trained on your own images and served with a FAISS index.

1. `POST /datasets` an archive of images (class folders optional), 2. `POST /train`,
3. follow `GET /jobs/{id}`, 4. once published: `POST /embed`, `GET /neighbours/{id}`,
`POST /search`, `POST /classify`.

Errors are `application/problem+json` (RFC 9457). Mutating routes need the admin key, read
routes the read key when one is set: `Authorization: Bearer <key>`.
"""


class UnsafeSettings(RuntimeError):
    pass


class _BodyLimit:
    """A request-body limit chosen by path (archives may be large, queries may not), answered
    with a problem: up front from Content-Length, or as soon as a streamed body passes it."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = Headers(scope=scope).get("content-length", "")
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


def _broker_check(settings: ServiceSettings) -> Callable[[], None]:
    def check() -> None:
        from worker.app import make_celery

        with make_celery(settings).connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    return check


def _celery_enqueue(settings: ServiceSettings) -> Callable[[str], None]:
    from worker.app import TRAIN_TASK, make_celery

    celery = make_celery(settings)

    def enqueue(job_id: str) -> None:
        celery.send_task(TRAIN_TASK, args=[job_id], queue=settings.gpu_queue)

    return enqueue


def create_app(settings: ServiceSettings | None = None, *, store: JobStore | None = None,
               enqueue: Callable[[str], None] | None = None) -> FastAPI:
    settings = settings or get_service_settings()
    if settings.production and settings.key_problems():
        raise UnsafeSettings("refusing to start in production: "
                             + "; ".join(settings.key_problems()))
    if settings.admin_api_key is None:
        log.warning("ADMIN_API_KEY is not set: mutating routes are open (development only)")
    settings.ensure_dirs()
    store = store or open_store(settings)
    metrics = Metrics(store.counts)
    registry = ModelRegistry(settings.models_root, settings.device, settings.model_poll_s,
                             on_swap=metrics.set_model)
    batcher = EmbedBatcher(settings.embed_max_batch, settings.embed_max_wait_ms / 1000,
                           on_batch=metrics.embed_batch.observe,
                           workers=settings.embed_workers or cpu_workers(settings.device))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry.start()
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()
            registry.stop()

    app = FastAPI(title="AND embedding retrieval", version="0.1.0", description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.registry = registry
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.enqueue = enqueue or _celery_enqueue(settings)
    app.state.broker_check = _broker_check(settings)
    errors.install(app)
    for module in (health, datasets, jobs, models, retrieval, classify):
        app.include_router(module.router)

    upload_limit = settings.max_upload_mb * 1024 * 1024
    # Base64 inflates 4/3; a little room for JSON and multipart framing.
    query_limit = int(settings.max_images_per_request * settings.max_image_mb * 1024 * 1024
                      * 4 / 3) + 65536
    app.add_middleware(_BodyLimit, limit_for=lambda path: upload_limit
                       if path.rstrip("/") == "/datasets" else query_limit)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app

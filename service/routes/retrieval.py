from __future__ import annotations

import math

import numpy as np
import torch
from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from service.auth import Reader
from service.batcher import Overloaded
from service.bodies import (
    FILES_FIELD,
    JSON,
    MULTIPART,
    b64_images,
    body_doc,
    form_images,
    form_int,
    read_form,
    read_json,
    require_media,
)
from service.deps import BatcherDep, MetricsDep, RegistryDep, SettingsDep, served_model
from service.errors import ProblemError, invalid, not_found, problems
from service.registry import Served
from service.schemas import (
    EmbedResponse,
    ImagesRequest,
    Neighbour,
    NeighboursResponse,
    SearchRequest,
    SearchResponse,
    SearchResult,
)
from service.settings import ServiceSettings
from trainer.images import InvalidImage

router = APIRouter(tags=["retrieval"])
INLINE_DECODE_BYTES = 16 * 1024
VERSION_QUERY = Query(None, max_length=128,
                      description="Serve with this model version instead of the current one.")


async def embed_images(blobs: list[bytes], served: Served, batcher: BatcherDep) -> np.ndarray:
    """Decode (thread pool) and embed (batcher thread) a request's images."""
    def decode() -> torch.Tensor:
        out = []
        for i, blob in enumerate(blobs):
            try:
                out.append(served.bundle.model.decode(blob))
            except InvalidImage as exc:
                raise InvalidImage(f"image {i}: {exc}") from None
        return torch.stack(out)

    # Small images decode in microseconds, less than a hop to the thread pool costs; large ones
    # would stall the event loop, so they go to a thread.
    small = sum(len(b) for b in blobs) <= INLINE_DECODE_BYTES
    images = decode() if small else await run_in_threadpool(decode)
    try:
        return await batcher.embed(served.bundle.model, images)
    except Overloaded as exc:
        raise ProblemError(503, "Service Unavailable", str(exc),
                           headers={"Retry-After": "1"}) from None


async def request_images(request: Request, settings: ServiceSettings) -> list[bytes]:
    kind = require_media(request, MULTIPART, JSON)
    if kind == JSON:
        body = await read_json(request, ImagesRequest)
        return b64_images(body.images, settings)
    return await form_images(await read_form(request, settings), settings)


def stamp(response: Response, served: Served) -> None:
    response.headers["X-Model-Version"] = served.version


@router.post("/embed", response_model=EmbedResponse, dependencies=[Reader],
             responses=problems(400, 401, 403, 404, 413, 415, 422, 503),
             summary="Embed a batch of images",
             openapi_extra=body_doc(ImagesRequest, FILES_FIELD))
async def embed(request: Request, response: Response, settings: SettingsDep,
                registry: RegistryDep, batcher: BatcherDep, metrics: MetricsDep,
                model_version: str | None = VERSION_QUERY) -> EmbedResponse:
    served = served_model(registry, model_version)
    blobs = await request_images(request, settings)
    vectors = await embed_images(blobs, served, batcher)
    stamp(response, served)
    return EmbedResponse(model_version=served.version, dim=served.bundle.dim,
                         embeddings=vectors.tolist())


def neighbours_of(served: Served, queries: np.ndarray, k: int,
                  exclude: list[int] | None = None) -> list[list[Neighbour]]:
    """k nearest items per query; `exclude[i]` (a row) is left out of query i's answer."""
    bundle = served.bundle
    extra = 1 if exclude is not None else 0
    scores, rows = bundle.index.search(queries, k + extra)
    out = []
    for qi, (s_row, r_row) in enumerate(zip(scores, rows, strict=True)):
        found = []
        for score, row in zip(s_row, r_row, strict=True):
            if row < 0 or (exclude is not None and row == exclude[qi]):
                continue
            label = int(bundle.labels[row])
            found.append(Neighbour(id=bundle.ids[row], score=float(score),
                                   label=bundle.classes[label] if label >= 0 else None))
        out.append(found[:k])
    return out


def check_k(k: int, limit: int) -> None:
    if not 1 <= k <= limit:
        raise invalid(f"k must be between 1 and {limit} (got {k})")


@router.get("/neighbours/{item_id:path}", response_model=NeighboursResponse,
            dependencies=[Reader], responses=problems(401, 403, 404, 422, 503),
            summary="The k nearest indexed items of an indexed item (itself excluded)")
async def neighbours(item_id: str, response: Response, settings: SettingsDep,
                     registry: RegistryDep,
                     k: int = Query(10, description="How many neighbours (1..MAX_K)."),
                     model_version: str | None = VERSION_QUERY) -> NeighboursResponse:
    check_k(k, settings.max_k)
    served = served_model(registry, model_version)
    row = served.bundle.row_of.get(item_id)
    if row is None:
        raise not_found(f"no item {item_id!r} in model {served.version}")
    query = served.bundle.vectors[row:row + 1]
    found = await run_in_threadpool(neighbours_of, served, query, k, [row])
    stamp(response, served)
    return NeighboursResponse(id=item_id, model_version=served.version, neighbours=found[0])


def query_vectors(vectors: list[list[float]], dim: int, version: str,
                  settings: ServiceSettings) -> np.ndarray:
    if len(vectors) > settings.max_images_per_request:
        raise invalid(f"{len(vectors)} vectors in one request; the limit is "
                      f"{settings.max_images_per_request}")
    for i, v in enumerate(vectors):
        if len(v) != dim:
            raise invalid(f"vector {i} has {len(v)} dimensions; model {version} expects {dim}")
        if not all(math.isfinite(x) for x in v):
            raise invalid(f"vector {i} has a value that is not a finite number")
    x = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any() or not np.isfinite(norms).all():
        raise invalid("a query vector has zero or infinite length")
    return (x / norms).astype(np.float32)  # cosine: compare directions


@router.post("/search", response_model=SearchResponse, dependencies=[Reader],
             responses=problems(400, 401, 403, 404, 413, 415, 422, 503),
             summary="Nearest indexed items of query images or vectors",
             openapi_extra=body_doc(SearchRequest, FILES_FIELD | {
                 "k": {"type": "integer", "default": 10}}))
async def search(request: Request, response: Response, settings: SettingsDep,
                 registry: RegistryDep, batcher: BatcherDep,
                 model_version: str | None = VERSION_QUERY) -> SearchResponse:
    served = served_model(registry, model_version)
    if require_media(request, MULTIPART, JSON) == JSON:
        body = await read_json(request, SearchRequest)
        k = body.k
        if (body.vectors is None) == (body.images is None):
            raise invalid("send either `vectors` or `images`")
        check_k(k, settings.max_k)
        if body.vectors is not None:
            queries = query_vectors(body.vectors, served.bundle.dim, served.version, settings)
        else:
            queries = await embed_images(b64_images(body.images or [], settings), served,
                                         batcher)
    else:
        form = await read_form(request, settings)
        k = form_int(form, "k", 10)
        check_k(k, settings.max_k)
        queries = await embed_images(await form_images(form, settings), served, batcher)
    found = await run_in_threadpool(neighbours_of, served, queries, k)
    stamp(response, served)
    return SearchResponse(model_version=served.version,
                          results=[SearchResult(neighbours=n) for n in found])

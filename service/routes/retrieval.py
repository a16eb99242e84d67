from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Path, Query, Request, Response
from starlette.datastructures import FormData

from live.filters import ANY, ItemFilter
from service.auth import Reader
from service.batcher import Overloaded
from service.bodies import (
    JSON,
    MULTIPART,
    b64_images,
    form_images,
    form_int,
    read_form,
    read_json,
    require_media,
)
from service.deps import QueryTools, QueryToolsDep, RegistryDep, served_model, stamp
from service.errors import ProblemError, invalid, not_found, problems
from service.filters import (
    FORM_FIELDS,
    LABELS_QUERY,
    PREFIX_QUERY,
    from_body,
    from_fields,
    from_form,
)
from service.limits import ID_MAX, JSON_BASE, VERSION_MAX, Limits
from service.registry import Served
from service.schemas import (
    ITEM_ID,
    VERSION,
    EmbedResponse,
    LabelText,
    Neighbour,
    NeighboursResponse,
    SearchResponse,
    SearchResult,
)

router = APIRouter(tags=["retrieval"])
VERSION_QUERY = Query(None, max_length=VERSION_MAX, pattern=VERSION,
                      description="Serve with this model version instead of the current one.")
QUERY_ERRORS = (400, 401, 403, 404, 413, 415, 422, 503)


async def embed_images(blobs: list[bytes], served: Served, tools: QueryTools) -> np.ndarray:
    """Decode (see service/decoding.py) and embed (batcher thread) a request's images."""
    images = await tools.decoder.decode(blobs, served.bundle.model.meta.image_size)
    try:
        return await tools.batcher.embed(served.bundle.model, images)
    except Overloaded as exc:
        raise ProblemError(503, "Service Unavailable", str(exc),
                           headers={"Retry-After": "1"}) from None


async def images_form(request: Request, limits: Limits, fields: set[str],
                      filtered: bool = False) -> FormData:
    """`files` (up to the image limit) and the named plain fields, once each, and the fields of
    a filter when the route takes one."""
    return await read_form(request, {"files": limits.images} | dict.fromkeys(fields, 1)
                           | (FORM_FIELDS if filtered else {}), {"files"})


@router.post("/embed", response_model=EmbedResponse, dependencies=[Reader],
             responses=problems(*QUERY_ERRORS), summary="Embed a batch of images")
async def embed(request: Request, response: Response, tools: QueryToolsDep,
                registry: RegistryDep,
                model_version: str | None = VERSION_QUERY) -> EmbedResponse:
    kind = require_media(request, MULTIPART, JSON)
    served = await served_model(registry, model_version)
    limits = tools.limits
    if kind == JSON:
        body = await read_json(request, tools.bodies.embed, JSON_BASE, limits.images,
                               limits.b64_image_chars)
        blobs = b64_images(body.images, limits)
    else:
        blobs = await form_images(await images_form(request, limits, set()), limits)
    vectors = await embed_images(blobs, served, tools)
    stamp(response, served)
    return EmbedResponse(model_version=served.version, dim=served.bundle.dim,
                         embeddings=vectors.tolist())


def neighbours_of(served: Served, queries: np.ndarray, k: int,
                  exclude: list[str | None] | None = None,
                  only: ItemFilter = ANY) -> list[list[Neighbour]]:
    """k nearest live items per query that match `only`; `exclude[i]` (an id) is left out of
    query i's answer."""
    index = served.index
    hits = index.search(queries, k, exclude=exclude, only=only)
    classes = index.classes
    return [[Neighbour(id=item, score=float(score), label=classes[label] if label >= 0 else None)
             for item, score, label in zip(ids, scores, labels, strict=True)]
            for ids, scores, labels in zip(hits.ids, hits.scores, hits.labels, strict=True)]


def check_k(k: int, limit: int) -> None:
    if not 1 <= k <= limit:
        raise invalid(f"k must be between 1 and {limit} (got {k})")


@router.get("/neighbours/{item_id:path}", response_model=NeighboursResponse,
            dependencies=[Reader], responses=problems(401, 403, 404, 422, 503),
            summary="The k nearest indexed items of an indexed item (itself excluded)",
            description="With `labels` and/or `prefix`, only items that match are searched: k "
            "neighbours whenever k items match.")
async def neighbours(response: Response, tools: QueryToolsDep, registry: RegistryDep,
                     item_id: str = Path(max_length=ID_MAX, pattern=ITEM_ID,
                                         description="An indexed item's id (its path in the "
                                         "dataset)."),
                     k: int | None = Query(None, ge=1, description="How many neighbours "
                                           "(1..MAX_K; default 10)."),
                     model_version: str | None = VERSION_QUERY,
                     labels: list[LabelText] | None = LABELS_QUERY,
                     prefix: str | None = PREFIX_QUERY) -> NeighboursResponse:
    k = tools.limits.default_k if k is None else k
    check_k(k, tools.limits.k)
    only = from_fields(labels, prefix)
    served = await served_model(registry, model_version)
    vector = served.index.vector(item_id)
    if vector is None:
        raise not_found(f"no item {item_id!r} in model {served.version}")
    found = await tools.lane.run(neighbours_of, served, vector[None], k, [item_id], only)
    stamp(response, served)
    return NeighboursResponse(id=item_id, model_version=served.version, neighbours=found[0])


def query_vectors(vectors: list[list[float]], dim: int, version: str) -> np.ndarray:
    for i, v in enumerate(vectors):
        if len(v) != dim:
            raise invalid(f"vector {i} has {len(v)} dimensions; model {version} expects {dim}")
    x = np.asarray(vectors, dtype=np.float64)
    # Scaled by the largest magnitude first: the length of a vector of finite values near the
    # float limit would overflow.
    x = x / np.maximum(np.abs(x).max(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise invalid("a query vector is all zeros: it has no direction")
    return (x / norms).astype(np.float32)  # cosine: compare directions


@router.post("/search", response_model=SearchResponse, dependencies=[Reader],
             responses=problems(*QUERY_ERRORS),
             summary="Nearest indexed items of query images or vectors",
             description="With a filter (JSON: `filter` {labels, prefix}; multipart: `labels` "
             "fields and a `prefix`), only items that match are searched: k neighbours per "
             "query whenever k items match.")
async def search(request: Request, response: Response, tools: QueryToolsDep,
                 registry: RegistryDep,
                 model_version: str | None = VERSION_QUERY) -> SearchResponse:
    kind = require_media(request, MULTIPART, JSON)
    served = await served_model(registry, model_version)
    limits = tools.limits
    if kind == JSON:
        body = await read_json(request, tools.bodies.search,
                               limits.vectors_budget(served.bundle.dim), limits.images,
                               limits.b64_image_chars)
        k, only = body.k, from_body(body.filter)
        if "vectors" in body.model_fields_set:
            queries = query_vectors(body.vectors, served.bundle.dim, served.version)
        else:
            queries = await embed_images(b64_images(body.images, limits), served, tools)
    else:
        form = await images_form(request, limits, {"k"}, filtered=True)
        k, only = form_int(form, "k", limits.default_k), from_form(form)
        check_k(k, limits.k)
        queries = await embed_images(await form_images(form, limits), served, tools)
    found = await tools.lane.run(neighbours_of, served, queries, k, None, only)
    stamp(response, served)
    return SearchResponse(model_version=served.version,
                          results=[SearchResult(neighbours=n) for n in found])

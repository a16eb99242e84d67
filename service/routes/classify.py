from __future__ import annotations

import numpy as np
import torch
from fastapi import APIRouter, Request, Response

from live.filters import ANY, ItemFilter
from service.auth import Reader
from service.bodies import (
    JSON,
    MULTIPART,
    b64_images,
    form_float,
    form_images,
    form_int,
    read_json,
    require_media,
)
from service.deps import QueryToolsDep, RegistryDep, served_model, stamp
from service.errors import ProblemError, invalid, not_found, problems
from service.filters import from_body, from_form
from service.registry import Served
from service.routes.retrieval import (
    QUERY_ERRORS,
    VERSION_QUERY,
    check_k,
    embed_images,
    images_form,
)
from service.schemas import ClassifyResponse, Prediction
from trainer.knn import vote

router = APIRouter(tags=["classification"])


def classify_vectors(served: Served, queries: np.ndarray, k: int, sigma: float,
                     exclude: list[str] | None = None,
                     only: ItemFilter = ANY) -> list[Prediction]:
    """Weighted kNN over the live labelled items that match `only`: each of the k nearest
    votes exp(s / sigma). `exclude[i]` (an item classified by id) does not vote for itself."""
    index = served.index
    hits = index.search(queries, k, exclude=exclude, voters_only=True, only=only)
    classes = list(index.classes)
    # Fewer than k voters: pad with non-voting slots (label -1) at the row's lowest score, so
    # the padding never shifts the scale of the weights.
    scores = np.zeros((len(queries), k), dtype=np.float32)
    labels = np.full((len(queries), k), -1, dtype=np.int64)
    for qi, (s_row, l_row) in enumerate(zip(hits.scores, hits.labels, strict=True)):
        scores[qi, :len(s_row)] = s_row
        scores[qi, len(s_row):] = s_row.min() if len(s_row) else 0.0
        labels[qi, :len(l_row)] = l_row
    shares = vote(torch.from_numpy(scores), torch.from_numpy(labels), len(classes),
                  sigma).numpy()
    return [Prediction(label=classes[int(share.argmax())],
                       scores={c: float(p) for c, p in zip(classes, share, strict=True)})
            for share in shares]


@router.post("/classify", response_model=ClassifyResponse, dependencies=[Reader],
             responses=problems(*QUERY_ERRORS, 409),
             summary="Weighted-kNN label of images or indexed items",
             description="The k nearest labelled items vote for their class with weight "
             "exp(similarity / sigma); scores are each class's share of the vote. An item "
             "classified by id does not vote for itself. With a filter (JSON: `filter` "
             "{labels, prefix}; multipart: `labels` fields and a `prefix`), only the labelled "
             "items that match vote. 409: the model has no labelled items (that match).")
async def classify(request: Request, response: Response, tools: QueryToolsDep,
                   registry: RegistryDep,
                   model_version: str | None = VERSION_QUERY) -> ClassifyResponse:
    kind = require_media(request, MULTIPART, JSON)
    served = await served_model(registry, model_version)
    limits, lane = tools.limits, tools.lane
    ids: list[str] | None = None
    if kind == JSON:
        body = await read_json(request, tools.bodies.classify, limits.ids_budget, limits.images,
                               limits.b64_image_chars)
        k, sigma, only = body.k, body.sigma, from_body(body.filter)
        if "ids" in body.model_fields_set:
            ids = body.ids
            blobs = None
        else:
            blobs = b64_images(body.images, limits)
    else:
        form = await images_form(request, limits, {"k", "sigma"}, filtered=True)
        k, only = form_int(form, "k", limits.default_classify_k), from_form(form)
        sigma = form_float(form, "sigma", 0.1)
        check_k(k, limits.classify_k)
        if not 0 < sigma <= 100:
            raise invalid(f"sigma must be in (0, 100] (got {sigma})")
        blobs = await form_images(form, limits)
    if served.index.voter_count() == 0 or len(served.index.classes) < 2:
        raise ProblemError(409, "Conflict", f"model {served.version} has no labelled items to "
                           "vote; train on a dataset with class folders")
    if only and served.index.voter_count(only) == 0:
        raise ProblemError(409, "Conflict", f"no labelled item of model {served.version} "
                           "matches the filter: none could vote")
    if ids is not None:
        vectors = []
        for item in ids:
            vector = served.index.vector(item)
            if vector is None:
                raise not_found(f"no item {item!r} in model {served.version}")
            vectors.append(vector)
        queries = np.stack(vectors)
        predictions = await lane.run(classify_vectors, served, queries, k, sigma, ids, only)
        for p, item in zip(predictions, ids, strict=True):
            p.id = item
    else:
        queries = await embed_images(blobs or [], served, tools)
        predictions = await lane.run(classify_vectors, served, queries, k, sigma, None, only)
    stamp(response, served)
    return ClassifyResponse(model_version=served.version, k=k, sigma=sigma,
                            predictions=predictions)

from __future__ import annotations

import numpy as np
import torch
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

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
from service.deps import BatcherDep, BodiesDep, DecoderDep, LimitsDep, RegistryDep, served_model
from service.errors import ProblemError, invalid, not_found, problems
from service.registry import Served
from service.routes.retrieval import (
    QUERY_ERRORS,
    VERSION_QUERY,
    check_k,
    embed_images,
    images_form,
    stamp,
)
from service.schemas import ClassifyResponse, Prediction
from trainer.knn import vote

router = APIRouter(tags=["classification"])


def classify_vectors(served: Served, queries: np.ndarray, k: int, sigma: float,
                     exclude: list[int] | None = None) -> list[Prediction]:
    """Weighted kNN over the labelled items: each of the k nearest votes exp(s / sigma)."""
    assert served.voters is not None
    bundle = served.bundle
    extra = 1 if exclude is not None else 0
    scores, rows = served.voters.search(queries, k + extra)
    rows = served.voter_rows(rows)
    if exclude is not None:
        keep = rows != np.asarray(exclude).reshape(-1, 1)
        # Drop the item itself, keep the first k of the rest (rows where it was absent drop
        # their last, k+1-th, neighbour instead).
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(scores, order, 1)
        rows = np.take_along_axis(rows, order, 1)
    labels = np.where(rows >= 0, bundle.labels[np.clip(rows, 0, None)], -1)
    shares = vote(torch.from_numpy(scores.astype(np.float32)), torch.from_numpy(labels),
                  len(bundle.classes), sigma).numpy()
    out = []
    for share in shares:
        out.append(Prediction(label=bundle.classes[int(share.argmax())],
                              scores={c: float(p) for c, p in zip(bundle.classes, share,
                                                                  strict=True)}))
    return out


@router.post("/classify", response_model=ClassifyResponse, dependencies=[Reader],
             responses=problems(*QUERY_ERRORS, 409),
             summary="Weighted-kNN label of images or indexed items",
             description="The k nearest labelled items vote for their class with weight "
             "exp(similarity / sigma); scores are each class's share of the vote. An item "
             "classified by id does not vote for itself. 409: the model has no labelled items.")
async def classify(request: Request, response: Response, limits: LimitsDep, bodies: BodiesDep,
                   registry: RegistryDep, batcher: BatcherDep, decoder: DecoderDep,
                   model_version: str | None = VERSION_QUERY) -> ClassifyResponse:
    kind = require_media(request, MULTIPART, JSON)
    served = await served_model(registry, model_version)
    ids: list[str] | None = None
    if kind == JSON:
        body = await read_json(request, bodies.classify, limits.ids_budget, limits.images,
                               limits.b64_image_chars)
        k, sigma = body.k, body.sigma
        if "ids" in body.model_fields_set:
            ids = body.ids
            blobs = None
        else:
            blobs = b64_images(body.images, limits)
    else:
        form = await images_form(request, limits, {"k", "sigma"})
        k = form_int(form, "k", limits.default_classify_k)
        sigma = form_float(form, "sigma", 0.1)
        check_k(k, limits.classify_k)
        if not 0 < sigma <= 100:
            raise invalid(f"sigma must be in (0, 100] (got {sigma})")
        blobs = await form_images(form, limits)
    if served.voters is None:
        raise ProblemError(409, "Conflict", f"model {served.version} has no labelled items to "
                           "vote; train on a dataset with class folders")
    if ids is not None:
        rows = []
        for item in ids:
            row = served.bundle.row_of.get(item)
            if row is None:
                raise not_found(f"no item {item!r} in model {served.version}")
            rows.append(row)
        queries = served.bundle.vectors[rows]
        predictions = await run_in_threadpool(classify_vectors, served, queries, k, sigma, rows)
        for p, item in zip(predictions, ids, strict=True):
            p.id = item
    else:
        queries = await embed_images(blobs or [], served, batcher, decoder)
        predictions = await run_in_threadpool(classify_vectors, served, queries, k, sigma)
    stamp(response, served)
    return ClassifyResponse(model_version=served.version, k=k, sigma=sigma,
                            predictions=predictions)

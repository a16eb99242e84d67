"""The 2-D embedding map of a model (computed when its bundle was published)."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from service.auth import Reader
from service.deps import RegistryDep, served_model
from service.errors import not_found, problems
from service.registry import Served
from service.routes.images import CACHE_CONTROL, not_modified
from service.routes.models import VERSION_PATH
from trainer import embedding_map

router = APIRouter(tags=["models"])


class MapPublic(BaseModel):
    model_version: str
    count: int = Field(description="Points on the map (a random sample of larger models).")
    item_count: int = Field(description="Items in the model.")
    classes: list[str]
    ids: list[str] = Field(description="Item id of each point.")
    x: list[float] = Field(description="Coordinates in [0, 1].")
    y: list[float]
    label: list[int] = Field(description="Index into `classes`, -1 for unlabelled items.")


_cache: OrderedDict[str, bytes] = OrderedDict()  # loaded bundle -> encoded answer
_lock = threading.Lock()
CACHED_MAPS = 2


def _encoded(served: Served) -> bytes:
    """The answer's JSON, built once per version and change-log position."""
    bundle = served.bundle
    # Items deleted since the bundle was published leave the map; the key follows the log.
    key = f"{bundle.path}\0{bundle.loaded_at}\0{served.live.applied}"
    with _lock:
        body = _cache.get(key)
        if body is not None:
            _cache.move_to_end(key)
            return body
    found = embedding_map.load(bundle.path)
    if found is None:
        raise not_found(f"model {served.version} has no embedding map: it was published "
                        "with maps off (MAP_POINTS=0) or before maps were computed; train "
                        "it again with maps on to get one")
    rows, coords = found
    keep = (rows >= 0) & (rows < len(bundle.ids))
    rows, coords = rows[keep], coords[:len(keep)][keep]
    live = np.asarray([bundle.ids[r] in served.index for r in rows], dtype=bool)
    rows, coords = rows[live], coords[live]
    body = json.dumps({
        "model_version": served.version, "count": len(rows), "item_count": len(bundle.ids),
        "classes": bundle.classes, "ids": [bundle.ids[r] for r in rows],
        "x": np.round(coords[:, 0].astype(np.float64), 5).tolist(),
        "y": np.round(coords[:, 1].astype(np.float64), 5).tolist(),
        "label": bundle.labels[rows].tolist(),
    }, separators=(",", ":")).encode()
    with _lock:
        _cache[key] = body
        while len(_cache) > CACHED_MAPS:
            _cache.popitem(last=False)
    return body


MAP_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": MapPublic, "content": {"application/json": {}}},
    304: {"description": "Not modified"}}


@router.get("/models/{version}/map", dependencies=[Reader], response_class=Response,
            responses=MAP_RESPONSES | problems(401, 403, 404, 422, 503),
            summary="2-D map of a model's items (PCA then t-SNE of their embeddings)")
async def model_map(request: Request, registry: RegistryDep,
                    version: str = VERSION_PATH) -> Response:
    served = await served_model(registry, version)
    tag = f'"map-{served.version}-{served.live.applied}"'
    headers = {"ETag": tag, "Cache-Control": CACHE_CONTROL, "X-Model-Version": served.version}
    if not_modified(request, tag):
        return Response(status_code=304, headers=headers)
    body = await run_in_threadpool(_encoded, served)
    return Response(body, media_type="application/json", headers=headers)

"""Item images and thumbnails, by item id for a model version (what the console shows).

Both answer with an ETag and Cache-Control and honour If-None-Match with 304. Only items the
model indexed are served, and only from inside their dataset (see service.item_images).
"""

from __future__ import annotations

import asyncio
import zipfile
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from service.auth import Reader
from service.deps import RegistryDep, SettingsDep, served_model
from service.errors import not_found, problems
from service.item_images import (
    THUMB_DECODES,
    THUMB_FORMAT,
    THUMB_SIZES,
    DatasetFiles,
    ItemFile,
    NotServed,
    ThumbnailCache,
    ThumbSize,
    etag,
    thumbnail,
)
from service.registry import Served
from service.routes.models import ITEM_PATH, VERSION_PATH
from service.settings import ServiceSettings

router = APIRouter(tags=["images"])

# Every use revalidates with the ETag (a 304 is cheap): with a read key, a cache must not hand
# an image to someone without one, and the answer depends on Authorization.
CACHE_CONTROL = "no-cache"
IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/*": {}}, "description": "The image"},
    304: {"description": "Not modified (If-None-Match matched the ETag)"}}


def _files(request: Request, settings: ServiceSettings) -> DatasetFiles:
    files = getattr(request.app.state, "item_files", None)
    if files is None:
        files = request.app.state.item_files = DatasetFiles(settings.data_root)
    return files


def _thumbs(request: Request) -> ThumbnailCache:
    cache = getattr(request.app.state, "thumbnails", None)
    if cache is None:
        cache = request.app.state.thumbnails = ThumbnailCache()
    return cache


def not_modified(request: Request, tag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    given = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in given or tag in given


def _item(served: Served, item_id: str) -> None:
    if item_id not in served.index:
        raise not_found(f"no item {item_id!r} in model {served.version}")


def _locate(request: Request, settings: ServiceSettings, served: Served,
            item_id: str) -> ItemFile:
    _item(served, item_id)
    dataset = served.bundle.manifest.get("dataset")
    if not dataset:
        raise not_found(f"model {served.version} does not name its dataset")
    try:
        added = served.live.paths.get(item_id)
        if added is not None:  # added through the API: its own file under the dataset
            return _files(request, settings).locate_added(dataset, added, item_id)
        return _files(request, settings).locate(dataset, item_id)
    except NotServed as exc:
        raise not_found(str(exc)) from None


def _bytes(found: ItemFile, item_id: str) -> bytes:
    try:
        return found.read()
    except (OSError, KeyError, zipfile.BadZipFile):
        raise not_found(f"the file of item {item_id!r} cannot be read any more") from None


def _answer(request: Request, body: bytes, media_type: str, tag: str,
            served: Served) -> Response:
    headers = {"ETag": tag, "Cache-Control": CACHE_CONTROL, "Vary": "Authorization",
               "X-Model-Version": served.version, "X-Content-Type-Options": "nosniff"}
    if not_modified(request, tag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@router.get("/models/{version}/images/{item_id:path}", dependencies=[Reader],
            response_class=Response, responses=IMAGE_RESPONSES | problems(401, 403, 404, 422, 503),
            summary="The image file of an indexed item, as stored in its dataset")
async def item_image(request: Request, settings: SettingsDep, registry: RegistryDep,
                     version: str = VERSION_PATH, item_id: str = ITEM_PATH) -> Response:
    served = await served_model(registry, version)
    return await run_in_threadpool(_image, request, settings, served, item_id)


def _image(request: Request, settings: ServiceSettings, served: Served,
           item_id: str) -> Response:
    found = _locate(request, settings, served, item_id)
    tag = etag("image", found.etag_seed)
    if not_modified(request, tag):
        return _answer(request, b"", found.media_type, tag, served)
    return _answer(request, _bytes(found, item_id), found.media_type, tag, served)


SIZE_QUERY = Query(128, description="Longest side in pixels, one of "
                   f"{', '.join(map(str, THUMB_SIZES))}.")


@router.get("/models/{version}/thumbnails/{item_id:path}", dependencies=[Reader],
            response_class=Response,
            responses=IMAGE_RESPONSES | problems(401, 403, 404, 422, 503),
            summary="A thumbnail of an indexed item's image (fits in size x size, never "
            "enlarged)")
async def item_thumbnail(request: Request, settings: SettingsDep, registry: RegistryDep,
                         version: str = VERSION_PATH, item_id: str = ITEM_PATH,
                         size: ThumbSize = SIZE_QUERY) -> Response:
    served = await served_model(registry, version)
    found = await run_in_threadpool(_locate, request, settings, served, item_id)
    px = int(size)
    tag = etag("thumbnail", px, found.etag_seed)
    if not_modified(request, tag):
        return _answer(request, b"", "", tag, served)
    cache = _thumbs(request)
    body = cache.get(tag)
    if body is None:
        async with _decodes(request):  # waiting requests hold no thread
            body = await run_in_threadpool(_decode, found, item_id, px)
        cache.put(tag, body)
    return _answer(request, body, THUMB_FORMAT[1], tag, served)


def _decodes(request: Request) -> asyncio.Semaphore:
    slots = getattr(request.app.state, "thumbnail_decodes", None)
    if slots is None:
        slots = request.app.state.thumbnail_decodes = asyncio.Semaphore(THUMB_DECODES)
    return slots


def _decode(found: ItemFile, item_id: str, size: int) -> bytes:
    return thumbnail(_bytes(found, item_id), size)  # an unreadable file: 422

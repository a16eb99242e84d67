"""Item images and thumbnails, by item id for a model version (what the console shows).

Both answer with an ETag and Cache-Control and honour If-None-Match with 304. Only items the
model indexed are served, and only from inside their dataset (see service.item_images).
"""

from __future__ import annotations

import zipfile

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from service.auth import Reader
from service.deps import RegistryDep, SettingsDep, served_model
from service.errors import not_found, problems
from service.item_images import (
    THUMB_FORMAT,
    DatasetFiles,
    ItemFile,
    NotServed,
    ThumbnailCache,
    etag,
    thumbnail,
)
from service.registry import Served
from service.routes.models import ITEM_PATH, VERSION_PATH
from service.settings import ServiceSettings

router = APIRouter(tags=["images"])

# Private: with a read key, a shared cache must not hand an image to someone without one.
CACHE_CONTROL = "private, max-age=3600"
THUMB_SIZES = (16, 512)
IMAGE_RESPONSES = {200: {"content": {"image/*": {}}, "description": "The image"},
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
    headers = {"ETag": tag, "Cache-Control": CACHE_CONTROL, "X-Model-Version": served.version,
               "X-Content-Type-Options": "nosniff"}
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


@router.get("/models/{version}/thumbnails/{item_id:path}", dependencies=[Reader],
            response_class=Response,
            responses=IMAGE_RESPONSES | problems(401, 403, 404, 422, 503),
            summary="A thumbnail of an indexed item's image (fits in size x size, never "
            "enlarged)")
async def item_thumbnail(request: Request, settings: SettingsDep, registry: RegistryDep,
                         version: str = VERSION_PATH, item_id: str = ITEM_PATH,
                         size: int = Query(128, ge=THUMB_SIZES[0], le=THUMB_SIZES[1],
                                           description="Longest side in pixels.")) -> Response:
    served = await served_model(registry, version)
    return await run_in_threadpool(_thumbnail, request, settings, served, item_id, size)


def _thumbnail(request: Request, settings: ServiceSettings, served: Served, item_id: str,
               size: int) -> Response:
    found = _locate(request, settings, served, item_id)
    tag = etag("thumbnail", size, found.etag_seed)
    if not_modified(request, tag):
        return _answer(request, b"", "", tag, served)
    cache = _thumbs(request)
    body = cache.get(tag)
    if body is None:
        body = thumbnail(_bytes(found, item_id), size)  # an unreadable file: 422
        cache.put(tag, body)
    return _answer(request, body, THUMB_FORMAT[1], tag, served)

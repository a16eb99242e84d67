"""The collections this API serves (service/collections.py), and the path parameter that scopes
every serving route to one of them: the app includes the same routers at the root (the default
collection) and under /collections/{collection}."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool

from service.auth import Reader
from service.collection_schemas import CollectionPublic, CollectionsPublic
from service.collections import Collections
from service.deps import CollectionsDep, SettingsDep
from service.errors import problems
from service.routes.models import _summary as model_summary
from service.schemas import DATASET_NAME
from service.settings import ServiceSettings
from state.datasets import dataset_path
from trainer.bundle import current_version, previous_version, read_manifest
from trainer.errors import BundleError, DatasetError

router = APIRouter(tags=["collections"])
PREFIX = "/collections/{collection}"
COLLECTION_PATH = Path(max_length=64, pattern=DATASET_NAME,
                       description="A collection: the name of the dataset it serves.")


async def collection_path(request: Request, collection: str = COLLECTION_PATH) -> None:
    """Declares the prefix's parameter (the registry dependency reads it from the path), and
    answers 404 for a collection that does not exist, whatever the route."""
    request.app.state.collections.resolve(collection)


def link(request: Request, path: str) -> str:
    """`path` (a serving route's, at the root) in the collection this request came through: a
    link in an answer stays in the collection that was asked. At the root it serves the
    default collection, so a link from /collections/{name} that left the prefix would open
    another collection's item, or a 409 where there is no default."""
    collection = request.path_params.get("collection")
    if not isinstance(collection, str) or not collection:
        return path
    return PREFIX.format(collection=quote(collection, safe="")) + path


def image_link(request: Request, version: str, item_id: str) -> str:
    """The link to an item's image as `version` serves it, in the request's collection."""
    return link(request, f"/models/{version}/images/{quote(item_id)}")


def scoped_paths(paths: dict[str, Any], path: str) -> list[str]:
    """A serving route's path in an OpenAPI document: at the root and under a collection."""
    return [p for p in (path, PREFIX + path) if p in paths]


def describe(settings: ServiceSettings, collections: Collections, name: str,
             default: str | None) -> CollectionPublic:
    root = settings.models_root
    version = current_version(root, name)
    summary = None
    if version is not None:
        try:
            summary = model_summary(read_manifest(root, version), version)
        except (BundleError, ValueError, KeyError):
            summary = None
    served = collections.loaded().get(name)
    loaded = served is not None and served.version == version
    count = len(served.index) if served is not None and loaded else (
        summary.item_count if summary else None)
    problem = None
    try:
        dataset_path(settings, name)
    except DatasetError:
        problem = (f"dataset {name!r} is not on this server (DATA_ROOT): the model answers "
                   "queries, but its item images and thumbnails cannot be shown")
    return CollectionPublic(name=name, default=name == default, current_version=version,
                            previous_version=previous_version(root, name), loaded=loaded,
                            item_count=count, model=summary,
                            images_available=problem is None, images_problem=problem)


@router.get("/collections", response_model=CollectionsPublic, dependencies=[Reader],
            responses=problems(401, 403),
            summary="The collections served: each dataset with its current model and figures")
async def list_collections(settings: SettingsDep,
                           collections: CollectionsDep) -> CollectionsPublic:
    def build() -> CollectionsPublic:
        names = collections.published(fresh=True)
        default = collections.default_name()
        data = [describe(settings, collections, name, default) for name in names]
        return CollectionsPublic(data=data, count=len(data), default=default)

    return await run_in_threadpool(build)


@router.get(PREFIX, response_model=CollectionPublic, dependencies=[Reader],
            responses=problems(401, 403, 404, 422),
            summary="A collection: its current model, item count, figures, and whether its "
            "images can be shown")
async def get_collection(settings: SettingsDep, collections: CollectionsDep,
                         collection: str = COLLECTION_PATH) -> CollectionPublic:
    name = collections.resolve(collection)
    assert name is not None
    return await run_in_threadpool(describe, settings, collections, name,
                                   collections.default_name())

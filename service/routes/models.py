from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from live.filters import ItemFilter
from service.auth import Admin, Reader
from service.deps import (
    CollectionDep,
    CollectionsDep,
    RegistryDep,
    SettingsDep,
    served_model,
    stamp,
)
from service.errors import conflict, not_found, problems
from service.limits import ID_MAX, VERSION_MAX
from service.registry import Served
from service.schemas import (
    FILTER_TEXT,
    ITEM_ID,
    VERSION,
    Item,
    ItemsPublic,
    ModelsPublic,
    ModelSummary,
)
from service.settings import ServiceSettings
from trainer.bundle import (
    current_version,
    list_versions,
    previous_version,
    read_manifest,
    rollback,
    set_current,
    validate,
)
from trainer.current import UNNAMED, dataset_of
from trainer.errors import BundleError
from trainer.evaluation import headline
from trainer.label_free import with_measure

router = APIRouter(tags=["models"])
log = logging.getLogger(__name__)
VERSION_PATH = Path(max_length=VERSION_MAX, pattern=VERSION, description="A model version.")
ITEM_PATH = Path(max_length=ID_MAX, pattern=ITEM_ID,
                 description="An indexed item's id (its path in the dataset).")


def _summary(manifest: dict[str, Any], current: str | None) -> ModelSummary:
    metrics = manifest.get("metrics") or {}
    return ModelSummary(
        version=manifest["version"], current=manifest["version"] == current,
        created=manifest.get("created"), dataset=manifest.get("dataset"),
        backbone=manifest.get("backbone"), dim=manifest.get("dim"),
        item_count=manifest.get("item_count"),
        index_type=(manifest.get("index") or {}).get("type"),
        knn_top1=headline(metrics)[0], knn_protocol=metrics.get("knn_protocol"),
        job_id=manifest.get("job_id"),
        pixel_knn_top1=metrics.get("pixel_knn_top1"),
        label_free=metrics.get("label_free"), pixel_label_free=metrics.get("pixel_label_free"),
        recall_at_10=(manifest.get("index") or {}).get("recall_at_10"),
        gate=manifest.get("gate"),
    )


@router.get("/models", response_model=ModelsPublic, dependencies=[Reader],
            responses=problems(401, 403), summary="Published model versions, newest first")
def list_models(request: Request, settings: SettingsDep) -> ModelsPublic:
    # Under /collections/{name}: that collection's versions; at the root, every version (with
    # the default collection's pointers, when there is one).
    scope = request.path_params.get("collection")
    collection = scope if scope is not None else request.app.state.collections.default_name()
    root = settings.models_root
    current = current_version(root, collection) if collection else None
    data = []
    currents: dict[str, str | None] = {}  # each version is current or not in its collection
    for version in reversed(list_versions(root)):
        try:
            manifest = read_manifest(root, version)
            home = str(manifest.get("dataset") or UNNAMED)
            if scope is not None and home != scope:
                continue
            if home not in currents:
                currents[home] = current_version(root, home)
            data.append(_summary(manifest, currents[home]))
        except (BundleError, ValueError, KeyError):
            continue
    return ModelsPublic(data=data, count=len(data), current=current,
                        previous=previous_version(root, collection) if collection else None)


def owning_collection(settings: ServiceSettings, collection: str | None, version: str,
           scoped: bool) -> str:
    """The collection of `version` (404 when the path names another one)."""
    home = dataset_of(settings.models_root, version)
    if scoped and home != collection:
        raise not_found(f"no model version {version!r} in collection {collection!r}")
    return home


@router.get("/models/{version}", dependencies=[Reader], responses=problems(401, 403, 404, 422),
            summary="A model's manifest (metrics, index, config, training time)")
def get_model(request: Request, settings: SettingsDep,
              version: str = VERSION_PATH) -> dict[str, Any]:
    scope = request.path_params.get("collection")
    manifest = read_manifest(settings.models_root, version)
    home = owning_collection(settings, scope, version, scope is not None)
    metrics = manifest.get("metrics")
    if isinstance(metrics, dict):
        manifest["metrics"] = with_measure(metrics)
    return manifest | {"current": version == current_version(settings.models_root, home),
                       "previous": version == previous_version(settings.models_root, home)}


@router.post("/models/{version}/promote", response_model=ModelSummary, dependencies=[Admin],
             responses=problems(401, 403, 404, 409, 422),
             summary="Make a version the current one (the API swaps to it without downtime)")
async def promote(request: Request, settings: SettingsDep, collections: CollectionsDep,
                  version: str = VERSION_PATH) -> ModelSummary:
    scope = request.path_params.get("collection")
    manifest = read_manifest(settings.models_root, version)
    # A version is promoted in its own dataset's collection, whichever path named it.
    home = owning_collection(settings, scope, version, scope is not None)

    def swap() -> None:
        try:
            validate(settings.models_root / version)
        except BundleError as exc:
            # The reason names files on the server: it goes to the log, not to the client.
            log.warning("model %s fails validation: %s", version, exc)
            raise conflict(f"model {version} fails validation (the API log says why)") from None
        set_current(settings.models_root, version)
        # validated just now: not held back by an old failure
        collections.registry(home).refresh(force=True)

    await run_in_threadpool(swap)
    return _summary(manifest, current_version(settings.models_root, home))


@router.post("/models/current/rollback", response_model=ModelSummary, dependencies=[Admin],
             responses=problems(401, 403, 409),
             summary="Make the previous current version current again (a second rollback "
             "undoes the first)")
async def roll_back(settings: SettingsDep, collection: CollectionDep,
                    registry: RegistryDep) -> ModelSummary:
    def swap() -> str:
        previous = previous_version(settings.models_root, collection) if collection else None
        if previous is None:
            raise conflict("there is no previous model version to roll back to")
        try:
            validate(settings.models_root / previous)
            version = rollback(settings.models_root, collection)
        except BundleError as exc:
            log.warning("rollback to %s refused: %s", previous, exc)
            raise conflict(f"the previous model {previous} cannot be served (the API log "
                           "says why)") from None
        registry.refresh(force=True)
        return version

    version = await run_in_threadpool(swap)
    return _summary(read_manifest(settings.models_root, version),
                    current_version(settings.models_root, collection))


class ItemsQuery:
    """A page of a collection's items and its filters: one definition for both listings
    (`GET /models/{version}/items` and `GET /items`)."""

    def __init__(self, offset: int = Query(0, ge=0, le=10**9),
                 limit: int = Query(100, ge=1, le=10_000),
                 label: str | None = Query(None, min_length=1, max_length=256,
                                           pattern=FILTER_TEXT,
                                           description="Only items of this class."),
                 prefix: str | None = Query(None, min_length=1, max_length=1024,
                                            pattern=FILTER_TEXT,
                                            description="Only items whose id starts with "
                                            "this.")) -> None:
        self.offset, self.limit = offset, limit
        self.only = ItemFilter(None if label is None else (label,), prefix)


ItemsQueryDep = Annotated[ItemsQuery, Depends()]


async def items_page(response: Response, served: Served, query: ItemsQuery) -> ItemsPublic:
    def page() -> tuple[list[Item], int, list[str]]:
        index = served.index
        items, count = index.items(query.offset, query.limit, query.only)
        # Copied after the page: a change since can only extend the list, never reorder it.
        classes = list(index.classes)
        return ([Item(id=i, label=classes[lab] if lab >= 0 else None) for i, lab in items],
                count, classes)

    data, count, classes = await run_in_threadpool(page)
    stamp(response, served)
    return ItemsPublic(model_version=served.version, data=data, count=count, classes=classes)


@router.get("/models/{version}/items", response_model=ItemsPublic, dependencies=[Reader],
            responses=problems(401, 403, 404, 422, 503),
            summary="The indexed items of a model (ids and labels), in index order; `count` "
            "is the number that match the filters")
async def list_items(response: Response, registry: RegistryDep, query: ItemsQueryDep,
                     version: str = VERSION_PATH) -> ItemsPublic:
    return await items_page(response, await served_model(registry, version), query)

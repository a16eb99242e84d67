"""The live collection: add, replace and delete items of the served model's dataset."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from service.auth import Admin, Reader
from service.batcher import EmbedBatcher
from service.bodies import JSON, MULTIPART, b64_images, read_form, read_json, require_media
from service.decoding import QueryDecoder
from service.deps import (
    BodiesDep,
    BulkBatcherDep,
    DecoderDep,
    LimitsDep,
    RegistryDep,
    SettingsDep,
    served_model,
    stamp,
)
from service.errors import (
    ProblemError,
    insufficient_storage,
    invalid_archive,
    not_found,
    problems,
    too_large,
)
from service.item_duplicates import DuplicateCheck, IfDuplicate
from service.item_schemas import ItemPublic, ItemsChanged
from service.items import NewItem, add_items, check_id, check_label, delete_items, is_new_id
from service.limits import JSON_BASE, MIB, Gate, Limits
from service.registry import ModelRegistry, Served
from service.routes.collections import image_link, link
from service.routes.models import ITEM_PATH, ItemsQueryDep, items_page
from service.routes.retrieval import VERSION_QUERY
from service.schemas import IDEMPOTENCY_KEY, ItemsPublic
from service.settings import ServiceSettings
from service.uploads import (
    UPLOAD_PREFIX,
    DiskFull,
    DiskGuard,
    SizeLimits,
    TooLarge,
    UploadRejected,
    extract,
    remove_tree,
)
from state.changes import Change
from trainer.images import no_images

router = APIRouter(tags=["items"])

UPSERT = Query(False, description="Replace items whose id exists (their image and vector) "
               "instead of answering 409.")
KEY = Header(None, alias="Idempotency-Key", pattern=IDEMPOTENCY_KEY,
             description="A name of the client's choosing for this change (a new UUID per "
             "change, say), so that it can be sent again safely when its reply was lost: once "
             "a change with this key is in the dataset's log (kept 24 hours), the same request "
             "sent again changes nothing more and answers as the first did.")

IF_DUPLICATE = Query("add", description="`refuse`: answer 409 (nothing added, the problem's "
                     "`errors` name each duplicating image and its duplicates) when an image "
                     "duplicates an existing item (cosine >= DUPLICATE_THRESHOLD); `add`: add "
                     "it and list its duplicates in the answer.")


def form_fields(limits: Limits) -> dict[str, int]:
    """The multipart fields of POST /items and how many times each may come."""
    n = limits.images
    return {"files": n, "ids": n, "labels": n, "prefix": 1, "label": 1, "archive": 1}


def invalid_form(detail: str) -> ProblemError:
    """A multipart body whose fields do not fit together (one id per file, a prefix that
    makes ids of the file names): rules a JSON Schema of the form cannot state."""
    return ProblemError(422, "Invalid Form", detail)


def _changed(served_version: str, dataset: str, changes: list[Change],
             check: DuplicateCheck | None = None) -> ItemsChanged:
    return ItemsChanged(model_version=served_version, dataset=dataset,
                        ids=[c.id for c in changes], seq=changes[-1].seq if changes else 0,
                        duplicate_threshold=check.threshold if check else None,
                        duplicates=check.found if check else [])


@router.post("/items", status_code=201, response_model=ItemsChanged, dependencies=[Admin],
             responses=problems(400, 404, 409, 413, 415, 422, 503, 507),
             summary="Add images to the served collection (or replace them, with upsert)",
             description="Each image is stored in the model's dataset, embedded with the served "
             "model and added to its index: `/neighbours`, `/search` and `/classify` find it at "
             "once on this replica, and on every other within MODEL_POLL_S; the next training "
             "job trains on it. All or nothing: one bad image, id or conflict and nothing is "
             "added. Send JSON (`items`: id, base64 image, optional label), or multipart: "
             "`files` with one `ids` field per file (or a `prefix`: the ids are prefix + file "
             "name), optional `labels` (one per file) or `label` (all); or one `archive` (zip "
             "or tar, its entries' paths under `prefix` are the ids) with an optional `label`. The "
             "answer lists, per image, the existing items it near-duplicates (cosine >= "
             "DUPLICATE_THRESHOLD); `if_duplicate=refuse` refuses the request instead (409).")
async def add(request: Request, response: Response, settings: SettingsDep, limits: LimitsDep,
              bodies: BodiesDep, registry: RegistryDep, batcher: BulkBatcherDep,
              decoder: DecoderDep, upsert: bool = UPSERT,
              model_version: str | None = VERSION_QUERY,
              idempotency_key: str | None = KEY,
              if_duplicate: IfDuplicate = IF_DUPLICATE) -> ItemsChanged:
    kind = require_media(request, MULTIPART, JSON)
    served = await served_model(registry, model_version)
    check = DuplicateCheck(settings.duplicate_threshold, refuse=if_duplicate == "refuse")
    if kind == JSON:
        body = await read_json(request, bodies.add_items, JSON_BASE + limits.ids_budget,
                               limits.images, limits.b64_image_chars)
        blobs = b64_images([i.image for i in body.items], limits)
        items = [NewItem(i.id, blob, i.label) for i, blob in zip(body.items, blobs,
                                                                   strict=True)]
        changes = await add_items(registry, served, items, upsert, decoder, batcher,
                                  reserve=settings.min_free_disk_mb * MIB, key=idempotency_key,
                                  duplicates=check)
    else:
        form = await read_form(request, form_fields(limits), {"files", "archive"})
        changes = await _add_form(form, request, settings, limits, registry, served, upsert,
                                  decoder, batcher, idempotency_key, check)
    response.headers["Location"] = link(request, f"/items/{quote(changes[0].id)}")
    stamp(response, served)
    return _changed(served.version, served.live.dataset, changes, check)


async def _add_form(form: FormData, request: Request, settings: ServiceSettings,
                    limits: Limits, registry: ModelRegistry, served: Served, upsert: bool,
                    decoder: QueryDecoder, batcher: EmbedBatcher,
                    key: str | None, check: DuplicateCheck) -> list[Change]:
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    archives = [f for f in form.getlist("archive") if isinstance(f, UploadFile)]
    texts = {name: [v for v in form.getlist(name) if isinstance(v, str)]
             for name in ("ids", "labels", "prefix", "label")}
    prefix = _one(texts["prefix"], "prefix") or ""
    label = check_label(_one(texts["label"], "label"))
    if bool(files) == bool(archives) or len(archives) > 1:
        raise invalid_form("send image files in `files`, or one archive in `archive`")
    if not archives:
        items = await _file_items(files, texts, prefix, label, limits)
        return await add_items(registry, served, items, upsert, decoder, batcher,
                               reserve=settings.min_free_disk_mb * MIB, key=key,
                               duplicates=check)
    if texts["ids"] or texts["labels"]:
        raise invalid_form("an archive's ids come from its entries' paths (under `prefix`); "
                           "`ids` and `labels` go with `files`")
    gate: Gate = request.app.state.archive_adds
    if not gate.try_acquire():
        raise ProblemError(503, "Service Unavailable", f"{gate.size} archives are being "
                           "added already (MAX_CONCURRENT_ARCHIVE_ADDS); try again shortly",
                           headers={"Retry-After": "5"})
    # The archive's images stay in its work folder, read from there a chunk at a time, until
    # the add is done.
    work = settings.data_root / f"{UPLOAD_PREFIX}{uuid.uuid4().hex}"  # swept at start if left
    try:
        items = await run_in_threadpool(_archive_items, archives[0], prefix, label, settings,
                                        limits, work)
        return await add_items(registry, served, items, upsert, decoder, batcher,
                               reserve=settings.min_free_disk_mb * MIB, key=key,
                               duplicates=check)
    finally:
        await run_in_threadpool(remove_tree, work)
        gate.release()


async def _file_items(files: list[UploadFile], texts: dict[str, list[str]], prefix: str,
                      label: str | None, limits: Limits) -> list[NewItem]:
    if len(files) > limits.images:
        raise invalid_form(f"{len(files)} images in one request; the limit is {limits.images} "
                      "(send an archive for more)")
    ids = texts["ids"]
    if ids and prefix:
        raise invalid_form("send `ids` or a `prefix`, not both")
    if ids and len(ids) != len(files):
        raise invalid_form(f"{len(files)} files but {len(ids)} ids: send one `ids` field per file")
    if not ids:
        names = [f.filename or "" for f in files]
        if not prefix or any(not n for n in names):
            raise invalid_form("name every file's id: one `ids` field per file, or a `prefix` "
                          "and file names")
        ids = [prefix + Path(n).name for n in names]
        for item in ids:
            if not is_new_id(item):
                raise invalid_form(f"prefix + file name {item!r} is not a valid id: a "
                                   "relative path without empty, '.' or '..' parts")
    labels: list[str | None] = list(texts["labels"]) or [label] * len(files)
    if len(labels) != len(files):
        raise invalid_form(f"{len(files)} files but {len(labels)} labels: one `labels` field per "
                      "file, or one `label` for all")
    items = []
    for f, item, lab in zip(files, ids, labels, strict=True):
        data = await f.read(limits.image_bytes + 1)
        if len(data) > limits.image_bytes:
            raise too_large(f"image {item!r} is larger than {limits.image_bytes} bytes")
        items.append(NewItem(check_id(item), data, check_label(lab)))
    return items


def _one(values: list[str], name: str) -> str | None:
    if len(values) > 1:
        raise invalid_form(f"send `{name}` once")
    return values[0] if values else None


def _archive_items(upload: UploadFile, prefix: str, label: str | None,
                   settings: ServiceSettings, limits: Limits, work: Path) -> list[NewItem]:
    """The images of an archive, unpacked under `work`, with the same checks as dataset
    uploads, at most MAX_ITEMS_PER_REQUEST of them, each at most MAX_IMAGE_MB and all of the
    archive at most MAX_ITEMS_ARCHIVE_MB; ids are `prefix` + each entry's path."""
    root = settings.data_root
    work.mkdir(parents=True)
    try:
        disk = DiskGuard(root, settings.min_free_disk_mb * MIB)
        archive = work / "archive"
        with open(archive, "wb") as out:
            shutil.copyfileobj(upload.file, out, 1 << 20)
        disk.need(archive.stat().st_size)
        staged = work / "data"
        sizes = SizeLimits(
            total=min(settings.max_extracted_mb, settings.max_items_archive_mb) * MIB,
            total_name="MAX_ITEMS_ARCHIVE_MB", image=limits.image_bytes)
        report = extract(archive, staged, sizes,
                         min(settings.max_archive_entries, settings.max_items_per_request),
                         disk)
        if report.images == 0:
            raise invalid_archive(no_images("the archive", report.ignored))
        if report.images > settings.max_items_per_request:
            raise too_large(f"the archive holds {report.images} images; the limit is "
                            f"MAX_ITEMS_PER_REQUEST = {settings.max_items_per_request}")
        files = sorted(p for p in staged.rglob("*") if p.is_file())
        return [NewItem(check_id(prefix + p.relative_to(staged).as_posix()), p, label)
                for p in files]
    except TooLarge as exc:
        raise too_large(str(exc)) from None
    except UploadRejected as exc:
        raise invalid_archive(f"{exc}; nothing was added") from None
    except DiskFull as exc:
        raise insufficient_storage(str(exc)) from None


@router.delete("/items/{item_id:path}", response_model=ItemsChanged, dependencies=[Admin],
               responses=problems(404, 409, 422, 503),
               summary="Delete an item from the served collection",
               description="It leaves the index at once (every replica within MODEL_POLL_S) "
               "and no later training job sees it.")
async def delete(response: Response, registry: RegistryDep, item_id: str = ITEM_PATH,
                 model_version: str | None = VERSION_QUERY,
                 idempotency_key: str | None = KEY) -> ItemsChanged:
    served = await served_model(registry, model_version)
    changes = await delete_items(registry, served, [item_id], idempotency_key)
    stamp(response, served)
    return _changed(served.version, served.live.dataset, changes)


@router.delete("/items", response_model=ItemsChanged, dependencies=[Admin],
               responses=problems(404, 409, 413, 415, 422, 503),
               summary="Delete several items (all of them, or none when one is missing)",
               description="The body is JSON: {\"ids\": [...]}.")
async def delete_many(request: Request, response: Response, limits: LimitsDep,
                      bodies: BodiesDep, registry: RegistryDep,
                      model_version: str | None = VERSION_QUERY,
                      idempotency_key: str | None = KEY) -> ItemsChanged:
    require_media(request, JSON)
    served = await served_model(registry, model_version)
    body = await read_json(request, bodies.delete_items, limits.bulk_ids_budget)
    changes = await delete_items(registry, served, body.ids, idempotency_key)
    stamp(response, served)
    return _changed(served.version, served.live.dataset, changes)


@router.get("/items", response_model=ItemsPublic, dependencies=[Reader],
            responses=problems(401, 403, 404, 422, 503),
            summary="The served collection's items (ids and labels), in index order, with "
            "every add and delete applied; `count` is the number that match the filters")
async def list_live(response: Response, registry: RegistryDep, query: ItemsQueryDep,
                    model_version: str | None = VERSION_QUERY) -> ItemsPublic:
    return await items_page(response, await served_model(registry, model_version), query)


@router.get("/items/{item_id:path}", response_model=ItemPublic, dependencies=[Reader],
            responses=problems(404, 422, 503),
            summary="An item of the served collection: label, model, when it was added")
async def get_item(request: Request, response: Response, registry: RegistryDep,
                   item_id: str = ITEM_PATH,
                   model_version: str | None = VERSION_QUERY) -> ItemPublic:
    served = await served_model(registry, model_version)
    view = served.live
    label = view.index.label(item_id)
    if label is None:
        raise not_found(f"no item {item_id!r} in model {served.version}")
    state = await asyncio.to_thread(
        lambda: view.changes.item_state(view.dataset, item_id) if view.changes else None)
    added = state is not None and state.get("state") == "live"
    live_state = state if added and state is not None else {}
    stamp(response, served)
    quoted = quote(item_id)
    return ItemPublic(
        id=item_id, label=view.index.classes[label] if label >= 0 else None,
        model_version=served.version, dataset=view.dataset,
        added_at=live_state.get("at"),
        added_with=live_state.get("version"),
        seq=live_state.get("seq"),
        links={"self": link(request, f"/items/{quoted}"),
               "neighbours": link(request, f"/neighbours/{quoted}"),
               "image": image_link(request, served.version, item_id)})

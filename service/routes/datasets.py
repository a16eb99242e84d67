from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service.auth import Admin, Reader
from service.bodies import JSON, MULTIPART, read_form, read_json, require_media
from service.deps import LimitsDep, SettingsDep
from service.errors import (
    ProblemError,
    conflict,
    insufficient_storage,
    invalid,
    invalid_archive,
    not_found,
    problems,
    too_large,
)
from service.limits import JSON_BASE, Limits
from service.schemas import (
    DATASET_NAME,
    DatasetPublic,
    DatasetRegister,
    DatasetsPublic,
    is_dataset_name,
)
from service.settings import ServiceSettings
from service.uploads import (
    UPLOAD_PREFIX,
    DiskFull,
    DiskGuard,
    TooLarge,
    UploadRejected,
    check_images,
    extract,
    remove_tree,
)
from trainer.data import open_collection
from trainer.errors import DatasetError
from trainer.files import atomic_write_text

router = APIRouter(tags=["datasets"])
META = ".meta"
MiB = 1024 * 1024


def _meta_path(settings: ServiceSettings, name: str) -> Path:
    return settings.data_root / META / f"{name}.json"


def _fingerprint(path: Path) -> list[int]:
    """Changes when images are added to or removed from a dataset, without listing its files:
    an archive's size and mtime, or the mtimes of a folder and of its folders two levels down
    (split and class folders), where adding or removing a file shows."""
    path = path.resolve()
    if path.is_file():
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]
    stamps = [path.stat().st_mtime_ns]
    for child in (c for c in path.iterdir() if c.is_dir()):
        stamps.append(child.stat().st_mtime_ns)
        stamps.extend(g.stat().st_mtime_ns for g in child.iterdir() if g.is_dir())
    return [len(stamps), max(stamps)]


def _summarise(settings: ServiceSettings, name: str) -> dict[str, Any]:
    """Scan a dataset (file names only, no decoding) and cache its summary."""
    stamp = _fingerprint(settings.data_root / name)
    collection = open_collection(settings.data_root / name, name=name)
    summary = collection.summary()
    summary.pop("skipped", None)
    summary["ignored"] = collection.ignored[:100]
    summary["name"] = name
    _write_meta(settings, name, summary, stamp)
    return summary


def _write_meta(settings: ServiceSettings, name: str, summary: dict[str, Any],
                stamp: list[int]) -> None:
    """Write the cached summary whole or not at all: a reader never sees half a file."""
    meta = _meta_path(settings, name)
    meta.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(meta, json.dumps({"stamp": stamp, "summary": summary}))


def _read_meta(settings: ServiceSettings, name: str) -> dict[str, Any] | None:
    """The cached summary, or None when there is none or it cannot be read (then the dataset
    is scanned again and the cache rewritten)."""
    try:
        cached = json.loads(_meta_path(settings, name).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cached, dict) or not isinstance(cached.get("summary"), dict):
        return None
    return cached


def _summary(settings: ServiceSettings, name: str) -> dict[str, Any]:
    if not is_dataset_name(name) or not (settings.data_root / name).exists():
        raise not_found(f"no dataset {name!r}")
    cached = _read_meta(settings, name)
    # A registered folder can change under the service: summarise it again when it did.
    if cached is not None and cached.get("stamp") == _fingerprint(settings.data_root / name):
        summary: dict[str, Any] = cached["summary"]
        if "layout_note" not in summary:  # cached before datasets said it: scanned once more
            # (only the note: an upload's own report of the files it left out stays).
            summary["layout_note"] = open_collection(settings.data_root / name,
                                                     name=name).layout_note
            _write_meta(settings, name, summary, cached["stamp"])
        return summary
    return _summarise(settings, name)  # a DatasetError is answered as 409 problem+json


def _names(settings: ServiceSettings) -> list[str]:
    root = settings.data_root
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir()
                  if not p.name.startswith(".") and is_dataset_name(p.name))


@router.post(
    "/datasets", status_code=201, response_model=DatasetPublic, dependencies=[Admin],
    responses=problems(400, 401, 403, 404, 409, 413, 415, 422, 507),
    summary="Upload an archive of images, or register a folder under the data root",
    description="Multipart: an archive upload (422 when it is not a usable archive of images, "
    "413 past MAX_UPLOAD_MB, MAX_EXTRACTED_MB or MAX_ARCHIVE_ENTRIES, 507 when storing it "
    "would leave less than MIN_FREE_DISK_MB free). JSON: a folder or archive already under "
    "the data root (404 when there is none at that path, 409 when it holds no usable dataset).",
)
async def create_dataset(request: Request, response: Response, settings: SettingsDep,
                         limits: LimitsDep) -> DatasetPublic:
    kind = require_media(request, MULTIPART, JSON)
    if kind == JSON:
        body = await read_json(request, DatasetRegister, JSON_BASE)
        summary = await run_in_threadpool(_register, settings, body.name,
                                          body.path if "path" in body.model_fields_set else None)
    else:
        form = await read_form(request, {"name": 1, "file": 1}, {"file"}, max_part_size=4096)
        name, upload = form.get("name"), form.get("file")
        if not isinstance(name, str) or not is_dataset_name(name):
            raise invalid("name: letters, digits, '.', '_' or '-', at most 64, starting with a "
                          "letter or digit")
        if not isinstance(upload, UploadFile):
            raise invalid("file: attach the archive in the multipart field `file`")
        if upload.size is not None and upload.size > limits.upload_bytes:
            raise too_large(f"the archive is larger than MAX_UPLOAD_MB "
                            f"({settings.max_upload_mb} MB)")
        summary = await run_in_threadpool(_store_upload, settings, limits, name, upload)
    response.headers["Location"] = f"/datasets/{summary['name']}"
    return DatasetPublic(**summary)


def _store_upload(settings: ServiceSettings, limits: Limits, name: str,
                  upload: UploadFile) -> dict[str, Any]:
    root = settings.data_root
    root.mkdir(parents=True, exist_ok=True)
    if (root / name).exists():
        raise conflict(f"dataset {name!r} already exists")
    work = root / f"{UPLOAD_PREFIX}{uuid.uuid4().hex}"
    work.mkdir()
    try:
        disk = DiskGuard(root, settings.min_free_disk_mb * MiB)
        archive = work / "archive"
        size = upload.size if upload.size is not None else limits.upload_bytes
        disk.need(size)
        with open(archive, "wb") as out:
            shutil.copyfileobj(upload.file, out, 1 << 20)
        staged = work / "data"
        report = extract(archive, staged, settings.max_extracted_mb * MiB,
                         settings.max_archive_entries, disk)
        check_images(report)
        try:
            open_collection(staged, name=name)  # the layout must make a dataset
        except DatasetError as exc:
            raise invalid_archive(str(exc)) from None
        try:
            os.rename(staged, root / name)  # atomic: a dataset appears whole or not at all
        except OSError:
            raise conflict(f"dataset {name!r} already exists") from None
        summary = _summarise(settings, name)
        summary["ignored"] = report.ignored[:100]
        summary["ignored_files"] = len(report.ignored)
        _write_meta(settings, name, summary, _fingerprint(root / name))
        return summary
    except TooLarge as exc:
        raise too_large(str(exc)) from None
    except UploadRejected as exc:
        raise invalid_archive(str(exc)) from None
    except DiskFull as exc:
        raise insufficient_storage(str(exc)) from None
    finally:
        remove_tree(work)


def _register(settings: ServiceSettings, name: str, path: str | None) -> dict[str, Any]:
    # The name and path passed their patterns: relative, no '..', no control characters.
    root = settings.data_root.resolve()
    target = (root / (path or name)).resolve()
    if not target.is_relative_to(root) or target == root:
        raise invalid(f"path {path or name!r} leads outside the data root")
    if not target.exists():
        raise not_found(f"no folder or archive {path or name!r} under the data root")
    link = root / name
    if path and path != name:
        if link.exists() or link.is_symlink():
            raise conflict(f"dataset {name!r} already exists")
        link.symlink_to(os.path.relpath(target, root))
    try:
        return _summarise(settings, name)
    except DatasetError as exc:
        if path and path != name:
            link.unlink(missing_ok=True)
        raise ProblemError(409, "Unusable Dataset", str(exc)) from None


@router.get("/datasets", response_model=DatasetsPublic, dependencies=[Reader],
            responses=problems(401, 403), summary="Datasets under the data root")
def list_datasets(settings: SettingsDep) -> DatasetsPublic:
    data = []
    for name in _names(settings):
        try:
            data.append(DatasetPublic(**_summary(settings, name)))
        except (DatasetError, ProblemError):
            continue  # not a usable dataset (e.g. empty folder): not listed
    return DatasetsPublic(data=data, count=len(data))


@router.get("/datasets/{name}", response_model=DatasetPublic, dependencies=[Reader],
            responses=problems(401, 403, 404, 409, 422),
            summary="Item count, classes and split sizes of a dataset")
def get_dataset(settings: SettingsDep,
                name: str = PathParam(pattern=DATASET_NAME, description="A dataset name.")
                ) -> DatasetPublic:
    return DatasetPublic(**_summary(settings, name))

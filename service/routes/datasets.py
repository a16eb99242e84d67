from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service.auth import Admin, Reader
from service.bodies import JSON, MULTIPART, read_json, require_media
from service.deps import SettingsDep
from service.errors import ProblemError, conflict, invalid, not_found, problems, too_large
from service.schemas import DATASET_NAME, DatasetPublic, DatasetRegister, DatasetsPublic
from service.settings import ServiceSettings
from service.uploads import UploadRejected, disk_free, extract, remove_tree
from trainer.data import open_collection
from trainer.errors import DatasetError

router = APIRouter(tags=["datasets"])
META = ".meta"


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
    meta = _meta_path(settings, name)
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"stamp": stamp, "summary": summary}))


def _summary(settings: ServiceSettings, name: str) -> dict[str, Any]:
    if not re.match(DATASET_NAME, name) or not (settings.data_root / name).exists():
        raise not_found(f"no dataset {name!r}")
    meta = _meta_path(settings, name)
    if meta.exists():
        cached = json.loads(meta.read_text())
        # A registered folder can change under the service: summarise it again when it did.
        if cached.get("stamp") == _fingerprint(settings.data_root / name):
            return cached["summary"]
    return _summarise(settings, name)  # a DatasetError is answered as 422 problem+json


def _names(settings: ServiceSettings) -> list[str]:
    root = settings.data_root
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir()
                  if not p.name.startswith(".") and re.match(DATASET_NAME, p.name))


MULTIPART_DOC = {"type": "object", "required": ["name", "file"], "properties": {
    "name": {"type": "string", "pattern": DATASET_NAME},
    "file": {"type": "string", "format": "binary",
             "description": "zip or tar(.gz) of images; class folders give labels, "
             "train/ and test/ folders give splits."}}}


@router.post(
    "/datasets", status_code=201, response_model=DatasetPublic, dependencies=[Admin],
    responses=problems(400, 401, 403, 409, 413, 415, 422),
    summary="Upload an archive of images, or register a folder under the data root",
    openapi_extra={"requestBody": {"required": True, "content": {
        MULTIPART: {"schema": MULTIPART_DOC},
        JSON: {"schema": DatasetRegister.model_json_schema()}}}},
)
async def create_dataset(request: Request, response: Response,
                         settings: SettingsDep) -> DatasetPublic:
    kind = require_media(request, MULTIPART, JSON)
    if kind == JSON:
        body = await read_json(request, DatasetRegister)
        summary = await run_in_threadpool(_register, settings, body.name, body.path)
    else:
        form = await request.form(max_files=1, max_fields=4, max_part_size=4096)
        name, upload = form.get("name"), form.get("file")
        if not isinstance(name, str) or not re.match(DATASET_NAME, name):
            raise invalid("name: letters, digits, '.', '_' or '-', at most 64, starting with a "
                          "letter or digit")
        if not isinstance(upload, UploadFile):
            raise invalid("file: attach the archive in the multipart field `file`")
        summary = await run_in_threadpool(_store_upload, settings, name, upload)
    response.headers["Location"] = f"/datasets/{summary['name']}"
    return DatasetPublic(**summary)


def _store_upload(settings: ServiceSettings, name: str, upload: UploadFile) -> dict[str, Any]:
    root = settings.data_root
    root.mkdir(parents=True, exist_ok=True)
    if (root / name).exists():
        raise conflict(f"dataset {name!r} already exists")
    work = root / f".upload-{uuid.uuid4().hex}"
    work.mkdir()
    try:
        archive = work / "archive"
        with open(archive, "wb") as out:
            shutil.copyfileobj(upload.file, out, 1 << 20)
        if disk_free(root) < 2 * archive.stat().st_size:
            raise ProblemError(507, "Insufficient Storage", "not enough disk for this dataset")
        staged = work / "data"
        try:
            report = extract(archive, staged, settings.max_extracted_mb * 1024 * 1024,
                             settings.max_archive_entries)
        except UploadRejected as exc:
            if "expands past" in str(exc):
                raise too_large(str(exc)) from None
            raise invalid(str(exc)) from None
        try:
            open_collection(staged, name=name)  # the layout must make a dataset
        except DatasetError as exc:
            raise invalid(str(exc)) from None
        try:
            os.rename(staged, root / name)  # atomic: a dataset appears whole or not at all
        except OSError:
            raise conflict(f"dataset {name!r} already exists") from None
        summary = _summarise(settings, name)
        summary["ignored"] = report.ignored[:100]
        summary["ignored_files"] = len(report.ignored)
        _write_meta(settings, name, summary, _fingerprint(root / name))
        return summary
    finally:
        remove_tree(work)


def _register(settings: ServiceSettings, name: str, path: str | None) -> dict[str, Any]:
    root = settings.data_root.resolve()
    target = (root / (path or name)).resolve()
    if not target.is_relative_to(root) or target == root or not target.exists():
        raise invalid(f"path {path or name!r} is not a folder or archive under the data root")
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
        raise invalid(str(exc)) from None


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
            responses=problems(401, 403, 404, 422),
            summary="Item count, classes and split sizes of a dataset")
def get_dataset(name: str, settings: SettingsDep) -> DatasetPublic:
    return DatasetPublic(**_summary(settings, name))

"""Reading query images and JSON from requests that accept multipart or JSON bodies."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

from service.errors import invalid, too_large, unsupported
from service.settings import ServiceSettings

M = TypeVar("M", bound=BaseModel)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_json(request: Request, model: type[M]) -> M:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise invalid("the body is not valid JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
                  for e in exc.errors()]
        first = errors[0]
        raise invalid(f"{'.'.join(first['loc']) or 'body'}: {first['msg']}", errors) from None


async def read_form(request: Request, settings: ServiceSettings) -> FormData:
    return await request.form(max_files=settings.max_images_per_request + 1, max_fields=20,
                              max_part_size=64 * 1024)


async def form_images(form: FormData, settings: ServiceSettings) -> list[bytes]:
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    if not files:
        raise invalid("send one or more images in the multipart field `files`")
    check_count(len(files), settings)
    limit = int(settings.max_image_mb * 1024 * 1024)
    out = []
    for i, f in enumerate(files):
        data = await f.read(limit + 1)
        if len(data) > limit:
            raise too_large(f"image {i} is larger than {settings.max_image_mb} MB")
        out.append(data)
    return out


def b64_images(items: list[str], settings: ServiceSettings) -> list[bytes]:
    check_count(len(items), settings)
    limit = int(settings.max_image_mb * 1024 * 1024)
    out = []
    for i, text in enumerate(items):
        if len(text) > limit * 4 // 3 + 4:
            raise too_large(f"image {i} is larger than {settings.max_image_mb} MB")
        try:
            out.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise invalid(f"image {i} is not valid base64") from None
    return out


def check_count(n: int, settings: ServiceSettings) -> None:
    if n == 0:
        raise invalid("the batch is empty")
    if n > settings.max_images_per_request:
        raise invalid(f"{n} images in one request; the limit is "
                      f"{settings.max_images_per_request}")


def form_int(form: FormData, name: str, default: int) -> int:
    return int(_form_number(form, name, default, int))


def form_float(form: FormData, name: str, default: float) -> float:
    return float(_form_number(form, name, default, float))


def _form_number(form: FormData, name: str, default: Any, kind: type) -> Any:
    raw = form.get(name)
    if raw is None or isinstance(raw, UploadFile):
        return default
    try:
        return kind(raw)
    except ValueError:
        raise invalid(f"{name}: expected a number, got {raw!r}") from None


def require_media(request: Request, *allowed: str) -> str:
    kind = media_type(request)
    if kind not in allowed:
        raise unsupported(f"send {' or '.join(allowed)} (got {kind or 'no Content-Type'})")
    return kind


MULTIPART = "multipart/form-data"
JSON = "application/json"


def body_doc(json_model: type[BaseModel], multipart_fields: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI request body for a route that takes JSON or multipart."""
    schema = json_model.model_json_schema()
    return {"requestBody": {"required": True, "content": {
        JSON: {"schema": schema},
        MULTIPART: {"schema": {"type": "object", "properties": multipart_fields,
                               "required": ["files"] if "files" in multipart_fields else []}},
    }}}


FILES_FIELD = {"files": {"type": "array", "items": {"type": "string", "format": "binary"},
                         "description": "One or more image files."}}

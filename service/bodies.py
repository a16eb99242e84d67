"""Reading request bodies: JSON into strict models, multipart forms with known fields only.

A JSON body is refused by its size before it is parsed: the body-size middleware bounds it per
route (service/limits.py), and here the part of it that would become many small objects
(numbers, keys, short strings) gets its own, smaller budget; only base64 images may be large.
Parsing and validation run in one pass (pydantic's JSON parser: invalid JSON, huge integers and
deep nesting are validation errors, never exceptions), off the event loop unless the body is
small, and a problem lists at most MAX_ERRORS field errors (with the total).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from service.errors import invalid, too_large, unsupported
from service.limits import LONG_STRING, Limits

M = TypeVar("M", bound=BaseModel)
MULTIPART = "multipart/form-data"
JSON = "application/json"
MAX_ERRORS = 20
# Below this a body parses in microseconds, less than a hop to the thread pool costs.
INLINE_JSON_BYTES = 16 * 1024
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def require_media(request: Request, *allowed: str) -> str:
    kind = media_type(request)
    if kind not in allowed:
        raise unsupported(f"send {' or '.join(allowed)} (got {kind or 'no Content-Type'})")
    return kind


async def read_json(request: Request, model: type[M], budget: int, images: int = 0,
                    image_chars: int = 0) -> M:
    """Parse and validate a JSON body. `budget`: bytes allowed outside base64 images; a route
    that takes images allows `images` strings longer than LONG_STRING, of `image_chars` at
    most each."""
    body = await request.body()
    if len(body) <= INLINE_JSON_BYTES:
        return _parse(body, model, budget, images, image_chars)
    return await run_in_threadpool(_parse, body, model, budget, images, image_chars)


def _parse(body: bytes, model: type[M], budget: int, images: int, image_chars: int) -> M:
    _check_structure(body, budget, images, image_chars)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_problem(exc) from None


def _check_structure(body: bytes, budget: int, images: int, image_chars: int) -> None:
    rest = len(body)
    if rest <= budget:
        return
    if images:
        # Strings in a valid JSON body are found left to right: a quote outside a string
        # opens one. Long strings are images; whatever else there is must fit the budget.
        long = 0
        for match in _STRING.finditer(body):
            size = match.end() - match.start()
            if size <= LONG_STRING:
                continue
            long += 1
            if long > images:
                raise invalid(f"more than {images} images in one request")
            if size - 2 > image_chars:
                raise too_large(f"image {long - 1} is larger than the image limit "
                                f"({image_chars} base64 characters)")
            rest -= size
    if rest > budget:
        raise too_large(f"the JSON body holds {rest} bytes besides images; the limit for this "
                        f"route is {budget}")


def validation_problem(exc: ValidationError) -> Exception:
    """A 422 problem naming the first error, listing at most MAX_ERRORS (and the total)."""
    total = exc.error_count()
    errors = [clean_error(e) for e in exc.errors(include_url=False, include_input=False,
                                                  include_context=False)[:MAX_ERRORS]]
    first = errors[0]
    if first["type"] == "json_invalid":
        return invalid(f"the body is not valid JSON ({first['msg']})", errors, total)
    where = ".".join(p for p in first["loc"] if p not in ("body", "query", "path"))
    return invalid(f"{where}: {first['msg']}" if where else first["msg"], errors, total)


def clean_error(e: Any) -> dict[str, Any]:
    return {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
            "type": str(e.get("type", ""))}


# --- multipart ------------------------------------------------------------------------------

async def read_form(request: Request, fields: dict[str, int], files: set[str],
                    max_part_size: int = 64 * 1024) -> FormData:
    """A multipart form with only the named fields, each at most `fields[name]` times; `files`
    must be file parts, the rest plain values. The parser's own limits (files, plain fields)
    are these counts plus one, so that one part too many gets the route's clear answer rather
    than the parser's (a malformed body, or far too many parts: 400 from the parser)."""
    max_files = sum(n for name, n in fields.items() if name in files)
    max_values = sum(n for name, n in fields.items() if name not in files)
    form = await request.form(max_files=max_files + 1, max_fields=max_values + 1,
                              max_part_size=max_part_size)
    for name, value in form.multi_items():
        if name not in fields:
            raise invalid(f"unknown form field {name!r}; this route takes "
                          f"{', '.join(sorted(fields))}")
        if (name in files) != isinstance(value, UploadFile):
            kind = "a file part" if name in files else "a plain form value, not a file"
            raise invalid(f"{name}: must be {kind}")
    for name, most in fields.items():
        given = len(form.getlist(name))
        if given > most:
            raise invalid(f"{name}: {given} parts; this route takes at most {most}")
    return form


async def form_images(form: FormData, limits: Limits) -> list[bytes]:
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    if not files:
        raise invalid("send one or more images in the multipart field `files`")
    check_count(len(files), limits)
    out = []
    for i, f in enumerate(files):
        data = await f.read(limits.image_bytes + 1)
        if len(data) > limits.image_bytes:
            raise too_large(f"image {i} is larger than {limits.image_bytes} bytes")
        out.append(data)
    return out


def b64_images(items: list[str], limits: Limits) -> list[bytes]:
    check_count(len(items), limits)
    out = []
    for i, text in enumerate(items):
        if len(text) > limits.b64_image_chars:
            raise too_large(f"image {i} is larger than {limits.image_bytes} bytes")
        try:
            out.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise invalid(f"image {i} is not valid base64") from None
    return out


def check_count(n: int, limits: Limits) -> None:
    if n == 0:
        raise invalid("the batch is empty")
    if n > limits.images:
        raise invalid(f"{n} images in one request; the limit is {limits.images}")


def form_int(form: FormData, name: str, default: int) -> int:
    return int(_form_number(form, name, default, _INT).split(".")[0])


def form_float(form: FormData, name: str, default: float) -> float:
    return float(_form_number(form, name, default, _NUMBER))


# Form values are text: numbers are accepted as JSON spells them (no "nan", "1_000", " 5").
_INT = re.compile(r"-?[0-9]{1,40}(?:\.0{1,40})?")  # 6.0 is an integer, as in JSON Schema
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]{0,39})(?:\.[0-9]{1,30})?(?:[eE][+-]?[0-9]{1,3})?")


def _form_number(form: FormData, name: str, default: Any, spelling: re.Pattern[str]) -> str:
    raw = form.get(name)
    if raw is None:
        return str(default)
    if isinstance(raw, UploadFile) or not spelling.fullmatch(raw):
        shown = "a file" if isinstance(raw, UploadFile) else repr(raw[:40])
        raise invalid(f"{name}: expected a number, got {shown}")
    return raw

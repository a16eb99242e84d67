"""Calling the HTTP API from Python with the standard library only: one JSON request helper
and one multipart/form-data builder, shared by the local stack's launcher
(deploy/local_stack.py) and the benchmarks, which run before the project's dependencies are
there. The Python client and its command line are service/client/."""

from __future__ import annotations

import json
import mimetypes
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIMEOUT_S = 600.0  # an upload of a large archive, or a search on a cold model, takes long


class HttpError(RuntimeError):
    """The API answered with an error status; `detail` is its problem's detail when it sent
    one, else the status's reason phrase."""

    def __init__(self, method: str, url: str, status: int, reason: str, body: bytes) -> None:
        self.status, self.reason = status, reason
        text = body.decode(errors="replace")
        try:
            problem = json.loads(body)
            detail = problem.get("detail") if isinstance(problem, dict) else None
        except ValueError:
            detail = None
        self.detail: str = detail or reason
        super().__init__(f"{method} {url} -> {status}: {text}")


def request(method: str, url: str, key: str | None = None, body: bytes | None = None,
            content_type: str | None = None, timeout: float = TIMEOUT_S) -> Any:
    """The decoded JSON answer (None for an empty one). Raises HttpError for an error status,
    and urllib.error.URLError (an OSError) when the API cannot be reached."""
    req = urllib.request.Request(url, data=body, method=method)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise HttpError(method, url, exc.code, str(exc.reason), exc.read()) from None


@dataclass(frozen=True)
class FilePart:
    """A file field of a multipart form."""

    field: str
    filename: str
    data: bytes
    content_type: str = "application/octet-stream"

    @classmethod
    def of(cls, field: str, path: Path, content_type: str | None = None) -> FilePart:
        """The file at `path`, its type guessed from its name unless given."""
        kind = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return cls(field, path.name, path.read_bytes(), kind)


def multipart(fields: Iterable[tuple[str, str]],
              files: Iterable[FilePart] = ()) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type: the text fields, then the files."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
             f"{value}\r\n".encode() for name, value in fields]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{f.field}"; '
              f'filename="{f.filename}"\r\nContent-Type: {f.content_type}\r\n\r\n'.encode()
              + f.data + b"\r\n" for f in files]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"

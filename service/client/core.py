"""The client's core, shared by Client (sync.py) and AsyncClient (aio.py): what to send, what
an answer means and when to send again, written once and doing no I/O of its own.

An operation is a plan: a generator that yields actions (`Send` a call, `Sleep`, `Emit` a
value to a caller that iterates) and is sent back what each one produced (an httpx.Response,
or the httpx.TransportError that stopped the request; None for the others). The two clients
differ only in how they perform an action: blocking, or awaiting.

Retries (`exchange`): an answer of 503 (or 429) is tried again after its Retry-After, or an
exponential back-off with jitter, a bounded number of times. A request that failed before it
was sent (no connection) is tried again whatever it is; one that failed after it may have
reached the server only when sending it twice is harmless: a read, or a change the API makes
idempotent (the items routes' Idempotency-Key, sent by every change of the collection).
"""

from __future__ import annotations

import email.utils
import mimetypes
import os
import random
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
BATCH = 64  # images per request: the API's default MAX_IMAGES_PER_REQUEST
CONNECT_S = 10.0  # a connection not made by then is tried again (see Retry)
T = TypeVar("T")
# The routes that serve one collection: sent under /collections/{name} by a client scoped to
# a collection (service/routes/collections.py), to the default collection otherwise.
SERVING_ROUTES = frozenset({"embed", "neighbours", "search", "classify", "items", "models"})
# An image or an archive: a file's path, or its bytes.
Upload = str | os.PathLike[str] | bytes
FilePart = tuple[str, tuple[str, bytes, str]]


@dataclass(frozen=True)
class Call:
    """One HTTP request. `admin`: sent with the admin key, else with the read key (or the
    admin key when there is no read key). `replayable`: it may be sent again after it may have
    reached the server. `retry`: False for a request that is never sent again (a probe)."""

    method: str
    path: str
    params: Mapping[str, str | list[str]] | None = None
    json: Any = None
    data: Mapping[str, str | list[str]] | None = None
    files: list[FilePart] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    admin: bool = False
    replayable: bool = False
    retry: bool = True


@dataclass(frozen=True)
class Send:
    call: Call


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Emit:
    value: Any


Action = Send | Sleep | Emit
Plan = Generator[Action, Any, T]


@dataclass(frozen=True)
class Stream(Generic[T]):
    """A plan whose Emit actions carry the values, of type T, that iterating it yields."""

    plan: Plan[Any]


class ApiError(Exception):
    """The API answered with an error status. The fields are its problem details (RFC 9457);
    an answer that is not one (a proxy's page) gives its reason phrase as the title and its
    text as the detail."""

    def __init__(self, status: int, title: str, detail: str | None = None,
                 type: str = "about:blank", instance: str | None = None,
                 errors: list[dict[str, Any]] | None = None) -> None:
        self.status, self.title, self.detail, self.type = status, title, detail, type
        self.instance, self.errors = instance, errors
        super().__init__(f"{status} {title}" + (f": {detail}" if detail else ""))

    @classmethod
    def of(cls, response: httpx.Response) -> ApiError:
        try:
            problem = response.json()
        except ValueError:
            problem = None
        if not isinstance(problem, dict):
            return cls(response.status_code, response.reason_phrase,
                       response.text[:1000] or None)
        return cls(response.status_code, str(problem.get("title") or response.reason_phrase),
                   problem.get("detail"), str(problem.get("type") or "about:blank"),
                   problem.get("instance"), problem.get("errors"))


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait that a Retry-After header asks for (delta-seconds or an HTTP date,
    RFC 9110 10.2.3), never negative; None when there is none or it cannot be read."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now) if when.tzinfo is not None else None


def never_sent(error: httpx.TransportError) -> bool:
    """Whether a failed request cannot have reached the server: no connection was made."""
    return isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))


@dataclass(frozen=True)
class Retry:
    """When and how long to wait before sending a request again.

    attempts: tries in all, the first one included (1: never again). The n-th retry waits
    backoff_s * 2**(n-1), at most max_backoff_s, less a random share of up to `jitter` of it
    (so that clients turned away together do not come back together), and never less than the
    answer's Retry-After; an answer asking for more than max_wait_s is not waited for (its
    error is raised). `statuses`: the answers that are tried again."""

    attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    jitter: float = 0.5
    max_wait_s: float = 120.0
    statuses: frozenset[int] = frozenset({429, 503})

    def backoff(self, attempt: int, draw: float) -> float:
        """The wait after try number `attempt` (1 for the first), `draw` uniform in [0, 1)."""
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * (
            1 - self.jitter * draw)

    def wait(self, call: Call, attempt: int, outcome: httpx.Response | httpx.TransportError,
             draw: float, now: float) -> float | None:
        """Seconds to wait before trying `call` again, or None to stop here."""
        if not call.retry or attempt >= self.attempts:
            return None
        if isinstance(outcome, httpx.TransportError):
            return self.backoff(attempt, draw) if call.replayable or never_sent(outcome) \
                else None
        if outcome.status_code not in self.statuses:
            return None
        wait = max(retry_after(outcome.headers.get("retry-after"), now) or 0.0,
                   self.backoff(attempt, draw))
        return wait if wait <= self.max_wait_s else None


def exchange(call: Call, retry: Retry) -> Plan[httpx.Response]:
    """Send `call`, again as `retry` allows; its successful answer, else ApiError (or the
    httpx.TransportError of the last try)."""
    attempt = 0
    while True:
        attempt += 1
        outcome = yield Send(call)
        wait = retry.wait(call, attempt, outcome, random.random(), time.time())
        if wait is None:
            break
        yield Sleep(wait)
    if isinstance(outcome, httpx.TransportError):
        raise outcome
    if outcome.is_error:
        raise ApiError.of(outcome)
    return outcome


@dataclass(frozen=True)
class Core:
    """Where the API is, the keys, the retry policy, the images sent per request and the
    collection the serving routes go to (None: the API's default collection)."""

    url: str
    admin_key: str | None
    read_key: str | None
    retry: Retry
    batch: int
    collection: str | None = None

    @classmethod
    def of(cls, url: str | None, admin_key: str | None, read_key: str | None,
           retry: Retry | None, batch: int, collection: str | None = None) -> Core:
        """Unset values from the environment: $AND_API_URL (else DEFAULT_URL), $ADMIN_API_KEY,
        $READ_API_KEY and $AND_COLLECTION."""
        env = os.environ
        return cls(url or env.get("AND_API_URL") or DEFAULT_URL,
                   admin_key if admin_key is not None else env.get("ADMIN_API_KEY"),
                   read_key if read_key is not None else env.get("READ_API_KEY"),
                   retry or Retry(), batch, collection or env.get("AND_COLLECTION") or None)

    def routed(self, url: str) -> str:
        """A serving route's path under this client's collection; any other path as it is
        (including the API's own links, which already name their collection)."""
        if self.collection is None or url.split("?", 1)[0].split("/")[1] not in SERVING_ROUTES:
            return url
        return f"/collections/{quote(self.collection, safe='')}{url}"

    def request(self, call: Call) -> dict[str, Any]:
        """The keyword arguments of httpx's build_request for `call` (URL relative to the
        client's base URL)."""
        key = self.admin_key if call.admin else (self.read_key or self.admin_key)
        headers = call.headers | ({"Authorization": f"Bearer {key}"} if key else {})
        return {"method": call.method, "url": self.routed(call.path), "params": call.params,
                "json": call.json, "data": call.data, "files": call.files, "headers": headers}

    def send(self, call: Call) -> Plan[httpx.Response]:
        return exchange(call, self.retry)

    def json(self, call: Call) -> Plan[Any]:
        return (yield from exchange(call, self.retry)).json()


def path(*parts: str) -> str:
    """A URL path of these parts, each quoted (an item id keeps its slashes)."""
    return "/" + "/".join(quote(p) for p in parts)


def params(**values: str | int | float | bool | None) -> dict[str, str]:
    """Query parameters, the unset ones left out."""
    return {k: (str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in values.items() if v is not None}


def uploads(values: Upload | Sequence[Upload]) -> list[Upload]:
    """One upload or several, as a list (a path is one, not a sequence of characters)."""
    if isinstance(values, (str, bytes, os.PathLike)):
        return [values]
    return list(values)


def part(field_name: str, upload: Upload, name: str = "upload") -> FilePart:
    """A multipart file field: a file's bytes, named and typed after it, or bytes as `name`."""
    if isinstance(upload, bytes):
        return field_name, (name, upload, "application/octet-stream")
    file = Path(upload)
    kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    return field_name, (file.name, file.read_bytes(), kind)


def archived(upload: Upload) -> Upload:
    """An archive as given (a path or its bytes), or a folder as a zip of its files (their
    paths in it relative to the folder)."""
    if not isinstance(upload, bytes) and Path(upload).is_dir():
        return zip_of_folder(Path(upload))
    return upload


def zip_of_folder(folder: Path) -> bytes:
    """A zip, in memory, of every regular file under `folder`, by its path relative to it
    (links are left out: an upload holds what the folder holds, nothing they point to)."""
    import io  # here: importing the client stays as light as importing httpx
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file() and not file.is_symlink():
                archive.write(file, file.relative_to(folder).as_posix())
    return buffer.getvalue()


def batches(count: int, size: int) -> list[range]:
    """Index ranges of at most `size`; one empty range for nothing (the API says what an empty
    request lacks)."""
    return [range(i, min(i + size, count)) for i in range(0, count, size)] or [range(0)]

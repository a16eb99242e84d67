"""Bearer keys, one guard per kind of route:

- admin (ADMIN_API_KEY): mutating routes (train, cancel, datasets, promote);
- read (READ_API_KEY, or the admin key): every read route, /config, and the details of /readyz;
  a collection's own key (PUT /collections/{name}/key) opens the read routes under
  /collections/{its name} and nothing else: not another collection, not GET /collections, not
  the root routes (even when they serve that collection), never an admin route;
- metrics (METRICS_API_KEY or the admin key when it is set; else as read): /metrics;
- docs (API_DOCS=key: as read): /docs, /redoc, /openapi.json;
- public: /healthz and /readyz, which orchestrators probe without a key (terse answers).

Keys are compared in constant time; 401 without a key, 403 with a wrong one. Every route takes
exactly one of these guards (tests/service/test_auth_routes.py checks it route by route).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool

from service.errors import ProblemError
from service.settings import ServiceSettings
from state.collection_keys import matches

bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <key>")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


# The checks below are `async def`: cheap, and FastAPI would otherwise run them in a thread.
def _matches(given: str, key: SecretStr | None) -> bool:
    return key is not None and hmac.compare_digest(given.encode(), key.get_secret_value().encode())


def _check(credentials: HTTPAuthorizationCredentials | None,
           accepted: list[SecretStr | None]) -> None:
    if credentials is None or not credentials.credentials:
        raise ProblemError(401, "Unauthorized", "send Authorization: Bearer <key>",
                           headers={"WWW-Authenticate": "Bearer"})
    if not any(_matches(credentials.credentials, key) for key in accepted):
        raise ProblemError(403, "Forbidden", "this key may not use this route")


def read_keys(settings: ServiceSettings) -> list[SecretStr | None] | None:
    """Keys a read route accepts; None when read routes are open."""
    if settings.read_api_key is None:
        return None
    return [settings.read_api_key, settings.admin_api_key]


def metrics_keys(settings: ServiceSettings) -> list[SecretStr | None] | None:
    if settings.metrics_api_key is not None:
        return [settings.metrics_api_key, settings.admin_api_key]
    return read_keys(settings)


def admin_open(settings: ServiceSettings) -> bool:
    return settings.admin_api_key is None and not settings.production


def docs_keys(settings: ServiceSettings) -> list[SecretStr | None] | None:
    return read_keys(settings) if settings.api_docs == "key" else None


async def require_admin(request: Request, credentials: Credentials) -> None:
    settings = request.app.state.settings
    if admin_open(settings):
        return  # development without a key: open, and the log said so at start
    _check(credentials, [settings.admin_api_key])


async def require_read(request: Request, credentials: Credentials) -> None:
    keys = read_keys(request.app.state.settings)
    if keys is None:
        return
    try:
        _check(credentials, keys)
    except ProblemError as refused:
        if (refused.status != 403 or credentials is None
                or not await _collection_key_opens(request, credentials.credentials)):
            raise


async def _collection_key_opens(request: Request, given: str) -> bool:
    """Whether `given` is the key of the collection this route's path names. Looked up in the
    job store on every request (off the event loop), so a rotated or removed key stops
    working on every replica at once."""
    collection = request.path_params.get("collection")
    if not isinstance(collection, str) or not collection:
        return False  # a root route, or GET /collections: no collection key opens it
    stored = await run_in_threadpool(request.app.state.store.get_key_digest, collection)
    return matches(given, stored)


async def require_metrics(request: Request, credentials: Credentials) -> None:
    keys = metrics_keys(request.app.state.settings)
    if keys is not None:
        _check(credentials, keys)


async def require_docs(request: Request, credentials: Credentials) -> None:
    keys = docs_keys(request.app.state.settings)
    if keys is not None:
        _check(credentials, keys)


async def public() -> None:
    """Marks a route that is open on purpose (health probes)."""


def may_read(request: Request) -> bool:
    """Whether this request could use a read route (for answers with optional detail)."""
    keys = read_keys(request.app.state.settings)
    if keys is None:
        return True
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and any(_matches(given.strip(), k) for k in keys)


Admin = Depends(require_admin)
Reader = Depends(require_read)
MetricsReader = Depends(require_metrics)
DocsReader = Depends(require_docs)
Public = Depends(public)
GUARDS = {require_admin: "admin", require_read: "read", require_metrics: "metrics",
          require_docs: "docs", public: "public"}

"""What stands in for keys while none is set (development): other web sites may not use the API
through a visitor's browser.

- Writes without an admin key: a cross-site page can send a multipart or body-less POST without
  a preflight, so a state-changing request whose `Origin` is another origin, or whose
  `Sec-Fetch-Site` is not same-origin (or none: typed in, bookmarked), is refused.
- Reads or writes without a key: a page that rebinds its own name to 127.0.0.1 becomes
  same-origin to the browser, but its requests still carry its own name in `Host`; a Host not in
  ALLOWED_HOSTS is refused.

Requests without these headers (curl, the Python client, orchestrators) are unaffected. With a
key in force the key is the guard: a browser attaches no bearer key to another site's request.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service import errors
from service.auth import admin_open, read_keys
from service.settings import ServiceSettings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_ORIGIN_FETCH = frozenset({"same-origin", "none"})


def host_name(host: str) -> str:
    """The name part of a Host header or URL authority, lower case: `[::1]:8000` is `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.rstrip(".")


def checks(settings: ServiceSettings) -> tuple[bool, bool]:
    """(check Host, check cross-site writes) with these settings."""
    writes_open = admin_open(settings)
    reads_open = read_keys(settings) is None and not settings.production
    return writes_open or reads_open, writes_open


class SiteGuard:
    def __init__(self, app: ASGIApp, settings: ServiceSettings) -> None:
        self.app = app
        self.check_host, self.check_writes = checks(settings)
        self.allowed = frozenset(host_name(h) for h in settings.allowed_hosts.split())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (self.check_host or self.check_writes):
            refusal = self._refusal(scope)
            if refusal is not None:
                response = errors.problem_response(Request(scope), 403, "Forbidden", refusal)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> str | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.check_host and host_name(host) not in self.allowed:
            return (f"host {host_name(host)!r} is not in ALLOWED_HOSTS; with no key set, this "
                    "service answers only to the names it is meant to be reached by")
        if not self.check_writes or scope["method"] in SAFE_METHODS:
            return None
        fetch = headers.get("sec-fetch-site")
        if fetch is not None and fetch.lower() not in SAME_ORIGIN_FETCH:
            return (f"a {fetch} request may not change state while ADMIN_API_KEY is unset "
                    "(development)")
        origin = headers.get("origin")
        if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower()
                                   != host.strip().lower()):
            return (f"a request from origin {origin!r} may not change state while "
                    "ADMIN_API_KEY is unset (development)")
        return None

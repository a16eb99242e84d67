"""The web console, and the read routes it uses (item images, thumbnails, the embedding map:
service/routes/images.py, service/routes/embedding_map.py, which service/app.py includes at the
root and under /collections/{collection} like every serving route).

The console is static files (HTML, CSS, ES modules, one vendored chart library) served
by the API itself, so the page and the API share one origin and the page needs no keys in
URLs, no CORS and nothing from the internet.

    GET /                                   the console's page
    GET /console/...                        its scripts, styles and vendored files
    GET /models/{version}/images/{id}       an item's image file
    GET /models/{version}/thumbnails/{id}   its thumbnail
    GET /models/{version}/map               the 2-D map of the model's items

The page calls only the public API: whatever it does, a client can do with curl.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

# Only our own origin, nothing inline: a key typed into the page can leave it only in an
# Authorization header to this API.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class _Static(StaticFiles):
    """Revalidated on every load (a 304 when unchanged), so an upgraded console is never
    mixed with cached old modules."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def install(app: FastAPI) -> None:
    index = (STATIC / "index.html").read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    def console_page() -> HTMLResponse:
        return HTMLResponse(index, headers=SECURITY_HEADERS)

    app.mount("/console", _Static(directory=STATIC), name="console")

"""The interactive documentation and the OpenAPI document, behind the docs guard (API_DOCS:
open, key or off; off leaves these routes out).

/docs is Swagger UI from the copy vendored under service/console/static/vendor/swagger-ui
(swagger-ui-dist 5.35.0, Apache-2.0) and /redoc is Redoc from service/console/static/vendor/redoc
(redoc 2.5.2's standalone bundle, MIT), each with its licence beside it, served by this service:
a page on the console's origin, where keys are typed, runs no script and loads no font from
another site."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from service.auth import DocsReader

router = APIRouter(include_in_schema=False, dependencies=[DocsReader])


@router.get("/openapi.json")
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


SWAGGER = "/console/vendor/swagger-ui"
SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - Swagger UI</title>
<link rel="stylesheet" href="{swagger}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{swagger}/swagger-ui-bundle.js"></script>
<script src="/console/js/api-docs.js"></script>
</body>
</html>
"""


@router.get("/docs")
async def swagger(request: Request) -> HTMLResponse:
    return HTMLResponse(SWAGGER_PAGE.format(title=escape(request.app.title), swagger=SWAGGER),
                        headers={"X-Content-Type-Options": "nosniff"})


REDOC = "/console/vendor/redoc"
# The bundle renders every <redoc spec-url> element it finds when it loads: no inline script.
REDOC_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - ReDoc</title>
</head>
<body style="margin: 0">
<redoc spec-url="/openapi.json"></redoc>
<script src="{redoc}/redoc.standalone.js"></script>
</body>
</html>
"""


# The bundle's footer links a logo on redoc.ly's CDN: the policy keeps every load on this origin.
# Redoc inserts its styles at run time and searches in a worker made from a blob.
REDOC_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'")


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return HTMLResponse(REDOC_PAGE.format(title=escape(request.app.title), redoc=REDOC),
                        headers={"X-Content-Type-Options": "nosniff",
                                 "Content-Security-Policy": REDOC_POLICY})

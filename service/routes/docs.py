"""The interactive documentation and the OpenAPI document, behind the docs guard (API_DOCS:
open, key or off; off leaves these routes out).

/docs is Swagger UI from the copy vendored under service/console/static/vendor/swagger-ui
(swagger-ui-dist 5.35.0, Apache-2.0, its LICENSE beside it), served by this service: a page on
the console's origin, where keys are typed, runs no script from another site."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html
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


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url="/openapi.json", title=request.app.title)

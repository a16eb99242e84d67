"""The app's routes as one flat list (FastAPI keeps included routers as nested entries)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts


@dataclass(frozen=True)
class RouteInfo:
    path: str
    methods: frozenset[str]
    dependencies: tuple[Any, ...]
    regex: Any
    in_schema: bool


def flat_routes(app: Any) -> list[RouteInfo]:
    out = []
    for ctx in iter_route_contexts(app.routes):
        methods = getattr(ctx, "methods", None)
        if not methods or ctx.path is None:
            continue
        out.append(RouteInfo(ctx.path, frozenset(methods),
                             tuple(getattr(ctx, "dependencies", None) or ()),
                             getattr(ctx, "path_regex", None),
                             bool(getattr(ctx, "include_in_schema", True))))
    return out


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route answers on `path`."""
    methods: set[str] = set()
    for route in flat_routes(app):
        if route.regex is not None and route.regex.match(path):
            methods |= route.methods
    return sorted(methods)

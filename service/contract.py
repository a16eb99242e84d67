"""The OpenAPI document: FastAPI's, completed so that it says exactly what the API accepts.

- Request bodies: the routes that take JSON or multipart read their bodies themselves
  (service/bodies.py); their schemas are the same models, with this app's limits (maxItems,
  string lengths, k bounds), the current model's vector dimension, and multipart bodies field
  by field with the content types of images and archives. POST /train's `config` is the
  TrainConfig schema, generated from trainer/config.py.
- Security: a route declares the bearer scheme only where its guard is in force with these
  settings; 401 and 403 are listed only there.
- Responses: every status a route can answer (500 everywhere), the headers that come with them
  (Location, X-Model-Version, X-Changes-Seq, Retry-After, WWW-Authenticate), and links from
  the answers that name ids to the routes that take them.

The document is rebuilt when the current model changes (its dimension and example ids are in
it), and cached otherwise.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.auth import GUARDS, admin_open, docs_keys, metrics_keys, read_keys
from service.bodies import JSON
from service.contract_bodies import REF, add_bodies, gpus_allowed
from service.errors import PROBLEM
from service.limits import Limits
from service.routing import RouteInfo, flat_routes
from service.settings import ServiceSettings

SCHEME = "HTTPBearer"
HEADER = {"schema": {"type": "string"}, "required": True}


def install(app: FastAPI) -> None:
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        current = app.state.collections.default_current()
        key = (current.version if current is not None else None, gpus_allowed(app))
        if "doc" not in cache or cache["key"] != key:
            cache["doc"] = build(app)
            cache["key"] = key
        return cache["doc"]

    app.openapi = openapi  # type: ignore[method-assign]


def _guard(route: RouteInfo) -> str | None:
    for dep in route.dependencies:
        if dep.dependency in GUARDS:
            return GUARDS[dep.dependency]
    return None


def _guarded(kind: str | None, settings: ServiceSettings) -> bool:
    if kind == "admin":
        return not admin_open(settings)
    if kind == "read":
        return read_keys(settings) is not None
    if kind == "metrics":
        return metrics_keys(settings) is not None
    if kind == "docs":
        return docs_keys(settings) is not None
    return False


def build(app: FastAPI) -> dict[str, Any]:
    settings: ServiceSettings = app.state.settings
    limits: Limits = app.state.limits
    current = app.state.collections.default_current()
    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    paths = doc["paths"]
    dataset = _some_dataset(settings)
    add_bodies(paths, schemas, app, limits, current)
    _bound_parameters(paths, limits, current, dataset)
    if dataset is not None:
        schemas["TrainRequest"]["properties"]["dataset"]["example"] = dataset
    routes = {(m.lower(), r.path): r for r in flat_routes(app) for m in r.methods}
    any_secured = False
    for path, item in paths.items():
        for method, op in item.items():
            route = routes.get((method, path.replace("{item_id}", "{item_id:path}")))
            secured = route is not None and _guarded(_guard(route), settings)
            any_secured |= secured
            _complete_operation(op, secured, method)
    if any_secured:
        doc["components"]["securitySchemes"] = {SCHEME: {
            "type": "http", "scheme": "bearer",
            "description": "Authorization: Bearer <key>. Read routes take READ_API_KEY or "
            "ADMIN_API_KEY; mutating routes ADMIN_API_KEY; /metrics METRICS_API_KEY when set."}}
    else:
        doc["components"].pop("securitySchemes", None)
    _add_links(paths)
    return doc


def _some_dataset(settings: ServiceSettings) -> str | None:
    """A dataset name for the examples (the first one under the data root)."""
    from service.schemas import is_dataset_name

    root = settings.data_root
    names = sorted(p.name for p in root.iterdir() if is_dataset_name(p.name)) if (
        root.is_dir()) else []
    return names[0] if names else None


# --- parameters -----------------------------------------------------------------------------

def _bound_parameters(paths: dict[str, Any], limits: Limits, current: Any,
                      dataset: str | None) -> None:
    for path, item in paths.items():
        for op in item.values():
            for param in op.get("parameters", []):
                schema = param.get("schema", {})
                # An optional parameter is absent, never null: FastAPI writes anyOf [X, null].
                options = [o for o in schema.get("anyOf", []) if o.get("type") != "null"]
                if len(options) == 1 and len(schema["anyOf"]) == 2:
                    rest = {k: v for k, v in schema.items() if k != "anyOf"}
                    schema = param["schema"] = options[0] | rest
                name = param["name"]
                if name == "name" and dataset is not None:
                    param["example"] = dataset
                if name == "collection" and current is not None:
                    param["example"] = current.live.dataset
                if name == "k" and "/neighbours/" in path:
                    # FastAPI writes an optional int as anyOf [integer, null]: k is an integer.
                    param["schema"] = {"type": "integer", "minimum": 1, "maximum": limits.k,
                                       "default": limits.default_k, "title": "K"}
                if current is not None and name in ("model_version", "version"):
                    param["example"] = current.version
                if current is not None and name == "item_id" and current.bundle.ids:
                    param["example"] = current.bundle.ids[0]


# --- responses and security -------------------------------------------------------------------

def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM: {"schema": {
        "$ref": REF.format(model="Problem")}}}}


def _complete_operation(op: dict[str, Any], secured: bool, method: str) -> None:
    responses = op.setdefault("responses", {})
    if secured:
        op["security"] = [{SCHEME: []}]
        responses.setdefault("401", _problem("Unauthorized"))
        responses.setdefault("403", _problem("Forbidden"))
    else:
        op.pop("security", None)
        responses.pop("401", None)
        responses.pop("403", None)
    responses.setdefault("500", _problem("Internal Server Error"))
    for status, response in responses.items():
        headers = response.setdefault("headers", {})
        if status == "401":
            headers["WWW-Authenticate"] = copy.deepcopy(HEADER)
        elif status == "503":
            headers["Retry-After"] = copy.deepcopy(HEADER) | {
                "description": "Seconds to wait before trying again."}
        elif status in ("201", "202") and method == "post":
            headers["Location"] = copy.deepcopy(HEADER) | {
                "description": "Where the created resource is."}
        elif status == "200" and _names_version(response):
            headers["X-Model-Version"] = copy.deepcopy(HEADER) | {
                "description": "The model version that answered."}
            headers["X-Changes-Seq"] = copy.deepcopy(HEADER) | {
                "description": "The change-log position its collection had reached."}
        if not headers:
            response.pop("headers")
    if "422" in responses:
        responses["422"]["description"] = (
            "Unprocessable Content: the request is invalid (errors lists at most 20 field "
            "errors; error_count says how many there were)")


def _names_version(response: dict[str, Any]) -> bool:
    ref = (response.get("content", {}).get(JSON, {}).get("schema", {}) or {}).get("$ref", "")
    return ref.rsplit("/", 1)[-1] in ("EmbedResponse", "NeighboursResponse", "SearchResponse",
                                      "ClassifyResponse", "ItemsPublic")


# --- links -------------------------------------------------------------------------------------

def _add_links(paths: dict[str, Any]) -> None:
    op_id = {(m, p): op["operationId"] for p, item in paths.items() for m, op in item.items()}

    def link(source: tuple[str, str], status: str, name: str, target: tuple[str, str],
             parameters: dict[str, str]) -> None:
        if source not in op_id or target not in op_id:
            return
        response = paths[source[1]][source[0]]["responses"].get(status)
        if response is not None:
            response.setdefault("links", {})[name] = {"operationId": op_id[target],
                                                      "parameters": parameters}

    job, jobs = "/jobs/{job_id}", "/jobs"
    for name, target in (("GetJob", ("get", job)), ("JobProgress", ("get", job + "/progress")),
                         ("CancelJob", ("delete", job))):
        link(("post", "/train"), "202", name, target, {"job_id": "$response.body#/id"})
        link(("get", jobs), "200", name, target, {"job_id": "$response.body#/data/0/id"})
    link(("post", "/datasets"), "201", "GetDataset", ("get", "/datasets/{name}"),
         {"name": "$response.body#/name"})
    link(("get", "/datasets"), "200", "GetDataset", ("get", "/datasets/{name}"),
         {"name": "$response.body#/data/0/name"})
    version = "/models/{version}"
    for name, target in (("GetModel", ("get", version)),
                         ("ModelItems", ("get", version + "/items"))):
        link(("get", "/models"), "200", name, target,
             {"version": "$response.body#/data/0/version"})
    neighbours = ("get", "/neighbours/{item_id}")
    link(("get", version + "/items"), "200", "Neighbours", neighbours,
         {"item_id": "$response.body#/data/0/id",
          "model_version": "$response.body#/model_version"})
    link(("post", "/search"), "200", "Neighbours", neighbours,
         {"item_id": "$response.body#/results/0/neighbours/0/id",
          "model_version": "$response.body#/model_version"})
    link(neighbours, "200", "Neighbours", neighbours,
         {"item_id": "$response.body#/neighbours/0/id",
          "model_version": "$response.body#/model_version"})

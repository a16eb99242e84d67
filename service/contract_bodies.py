"""Request bodies in the OpenAPI document (service/contract.py): the routes that take JSON or
multipart read their bodies themselves (service/bodies.py), so their schemas are written here
from the same models, with this app's limits, the current model's vector dimension, and
multipart bodies field by field with the content types of images and archives."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from service.bodies import JSON, MULTIPART
from service.decoding import QUERY_FORMATS
from service.limits import ID_MAX, Limits
from service.routes.collections import scoped_paths
from service.routes.retrain import RetrainPolicyIn
from service.schemas import (
    DATASET_NAME,
    ITEM_ID,
    LABEL,
    LABEL_MAX,
    NEW_ITEM_ID,
    DatasetRegister,
    TrainRequest,
)
from trainer.config import TrainConfig
from trainer.images import ACCEPTED

IMAGE_TYPES = ", ".join(f"image/{f.lower()}" for f in QUERY_FORMATS)
ARCHIVE_TYPES = ("application/zip, application/x-tar, application/gzip, "
                 "application/x-bzip2, application/x-xz")
REF = "#/components/schemas/{model}"


def _schema(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF)
    for name, sub in schema.pop("$defs", {}).items():
        schemas[name] = sub
    return schema


def _body(json_schema: dict[str, Any] | None, form: dict[str, Any] | None,
          encoding: dict[str, Any] | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if json_schema is not None:
        content[JSON] = {"schema": json_schema}
    if form is not None:
        content[MULTIPART] = {"schema": form}
        if encoding:
            content[MULTIPART]["encoding"] = encoding
    return {"required": True, "content": content}


def _files(limits: Limits) -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "maxItems": limits.images,
            "items": {"type": "string", "format": "binary"},
            "description": f"Image files ({ACCEPTED}), each at most "
            f"{limits.image_bytes} bytes."}


def _form(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required,
            "additionalProperties": False}


def gpus_allowed(app: FastAPI) -> int:
    """The most GPUs a job may ask for now: the largest live worker's (at least 1, which every
    worker runs)."""
    try:
        return max(1, app.state.store.largest_capacity())
    except Exception:  # the store is down: the submission itself will say so
        return 1


def _bound_processes(config: dict[str, Any], gpus: int) -> None:
    """Jobs run on one machine, on at most `gpus` GPUs, with 2 images per process and batch."""
    props = config["properties"]
    props["gpus"]["maximum"] = gpus
    props["gpus"]["description"] += f" At most {gpus} now (the largest live worker's)."
    props["nodes"]["maximum"] = 1
    props["nodes"]["description"] += " Jobs submitted here run on one machine: 1."
    config["allOf"] = [
        {"if": {"required": ["gpus"], "properties": {"gpus": {"const": k}}},
         # batch_size left out is 128: enough for up to 64 processes.
         "then": {"properties": {"batch_size": {"minimum": 2 * k}}}}
        for k in range(2, gpus + 1)
    ] if gpus > 1 else []
    if not config["allOf"]:
        del config["allOf"]


def add_bodies(paths: dict[str, Any], schemas: dict[str, Any], app: FastAPI, limits: Limits,
                current: Any) -> None:
    bodies = app.state.bodies
    images_encoding = {"files": {"contentType": IMAGE_TYPES}}
    embed = _schema(bodies.embed, schemas)
    search = _schema(bodies.search, schemas)
    classify = _schema(bodies.classify, schemas)
    if current is not None:
        dim = current.bundle.dim
        vector = search["properties"]["vectors"]["items"]
        vector.update(minItems=dim, maxItems=dim, description=f"{dim} numbers (the current "
                      f"model's dimension), not all zero.", **{"not": {"items": {"const": 0}}})
    k = search["properties"]["k"]
    classify_k, sigma = classify["properties"]["k"], classify["properties"]["sigma"]
    for name, schema in (("ImagesRequest", embed), ("SearchRequest", search),
                         ("ClassifyRequest", classify)):
        schemas[name] = schema
    # A form has no null: its filter fields are the JSON filter's, absent when not wanted; one
    # `labels` field is one label (on the wire, a list of one is that label alone).
    filters = {name: next(o for o in field["anyOf"] if o.get("type") != "null")
               | {"description": field["description"]}
               for name, field in schemas["SearchFilter"]["properties"].items()}
    filters["labels"] = {"anyOf": [filters["labels"], filters["labels"]["items"]],
                         "description": filters["labels"]["description"]}
    bodies_by_route = {
        "/embed": _body({"$ref": REF.format(model="ImagesRequest")},
                        _form({"files": _files(limits)}, ["files"]), images_encoding),
        "/search": _body({"$ref": REF.format(model="SearchRequest")},
                         _form({"files": _files(limits), "k": k, **filters}, ["files"]),
                         images_encoding),
        "/classify": _body({"$ref": REF.format(model="ClassifyRequest")},
                           _form({"files": _files(limits), "k": classify_k, "sigma": sigma,
                                  **filters}, ["files"]), images_encoding),
    }
    for path, body in bodies_by_route.items():
        for each in scoped_paths(paths, path):
            paths[each]["post"]["requestBody"] = body

    config = TrainConfig.json_schema()
    _bound_processes(config, gpus_allowed(app))
    schemas["TrainConfig"] = config
    train = _schema(TrainRequest, schemas)
    train["properties"]["config"] = {
        "$ref": REF.format(model="TrainConfig"),
        "description": "Overrides of the training config (every key optional; see "
        "TrainConfig). lr_milestones may come in any order."}
    schemas["TrainRequest"] = train
    paths["/train"]["post"]["requestBody"] = _body({"$ref": REF.format(model="TrainRequest")},
                                                   None)
    policy = _schema(RetrainPolicyIn, schemas)
    policy["properties"]["config"] = {
        "$ref": REF.format(model="TrainConfig"),
        "description": RetrainPolicyIn.model_fields["config"].description}
    schemas["RetrainPolicyIn"] = policy
    paths["/datasets/{name}/retrain"]["put"]["requestBody"] = _body(
        {"$ref": REF.format(model="RetrainPolicyIn")}, None)

    _add_item_bodies(paths, schemas, bodies, limits)

    schemas["DatasetRegister"] = _schema(DatasetRegister, schemas)
    schemas["DatasetRegister"]["properties"]["path"].pop("default", None)
    upload = _form({
        "name": {"type": "string", "pattern": DATASET_NAME, "description": "Dataset name."},
        "file": {"type": "string", "format": "binary",
                 "description": f"zip or tar (.gz, .bz2, .xz) of images, at most "
                 f"{limits.upload_bytes} bytes; class folders give labels, train/ and test/ "
                 "folders give splits."}}, ["name", "file"])
    paths["/datasets"]["post"]["requestBody"] = _body(
        {"$ref": REF.format(model="DatasetRegister")}, upload,
        {"file": {"contentType": ARCHIVE_TYPES}})


def _add_item_bodies(paths: dict[str, Any], schemas: dict[str, Any], bodies: Any,
                     limits: Limits) -> None:
    schemas["ItemsAdd"] = _schema(bodies.add_items, schemas)
    schemas["ItemsDelete"] = _schema(bodies.delete_items, schemas)
    text = {"type": "string", "minLength": 1, "maxLength": ID_MAX, "pattern": NEW_ITEM_ID}
    form = _form({
        "files": _files(limits),
        "ids": {"type": "array", "items": text, "maxItems": limits.images,
                "description": "One id per file, in order (or give a prefix); in Unicode "
                "NFC."},
        "prefix": {"type": "string", "maxLength": ID_MAX, "pattern": ITEM_ID,
                   "description": "Ids are this + each file's name (or archive entry's path)."},
        "labels": {"type": "array", "maxItems": limits.images, "items": {
            "type": "string", "minLength": 1, "maxLength": LABEL_MAX, "pattern": LABEL},
            "description": "One label per file, in order."},
        "label": {"type": "string", "minLength": 1, "maxLength": LABEL_MAX, "pattern": LABEL,
                  "description": "One label for every item."},
        "archive": {"type": "string", "format": "binary",
                    "description": f"zip or tar of images, at most {limits.upload_bytes} "
                    "bytes."}}, [])
    # Each branch an object too: a generator that reads a branch alone must not take a bare
    # `required` list for "anything", such as the body 0.
    form["oneOf"] = [{"type": "object", "required": ["files"]},
                     {"type": "object", "required": ["archive"]}]
    for path in scoped_paths(paths, "/items"):
        paths[path]["post"]["requestBody"] = _body(
            {"$ref": REF.format(model="ItemsAdd")}, form,
            {"files": {"contentType": IMAGE_TYPES}, "archive": {"contentType": ARCHIVE_TYPES}})
        paths[path]["delete"]["requestBody"] = _body(
            {"$ref": REF.format(model="ItemsDelete")}, None)



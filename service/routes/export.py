"""A model's encoder as an ONNX graph (trainer/export.py), and what the graph takes and gives.

The export is made on the first request for a version, off the event loop, and kept in the
bundle's folder beside encoder.pt (a bundle never changes, so neither does its export; a
bundle withdrawn takes its export with it). Concurrent first requests for one version wait
for one export in this process; exports of two processes write the same files atomically.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from service.auth import Reader
from service.deps import SettingsDep
from service.errors import conflict, insufficient_storage, problems
from service.routes.images import CACHE_CONTROL, not_modified
from service.routes.models import VERSION_PATH, owning_collection
from service.settings import ServiceSettings
from trainer import export
from trainer.bundle import read_manifest
from trainer.errors import BundleError

router = APIRouter(tags=["models"])
log = logging.getLogger(__name__)
ONNX_MEDIA = "application/octet-stream"

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


class TensorSpec(BaseModel):
    name: str
    dtype: Literal["uint8", "float32"]
    shape: list[int | Literal["N"]] = Field(description="\"N\": any batch size.")


class InputSpec(TensorSpec):
    layout: Literal["NHWC"]
    colour: Literal["RGB"]


class OutputSpec(TensorSpec):
    l2_normalised: bool


class Normalisation(BaseModel):
    mean: list[float] = Field(min_length=3, max_length=3)
    std: list[float] = Field(min_length=3, max_length=3)
    in_graph: bool = Field(description="Applied inside the graph: feed it raw pixels.")
    formula: str


class OnnxSpec(BaseModel):
    """What GET /models/{version}/encoder.onnx takes and gives."""

    format: int
    onnx_file: str
    model_version: str | None
    backbone: str
    image_size: int = Field(description="S: the graph takes S x S images.")
    dim: int
    input: InputSpec
    output: OutputSpec
    preparation: str = Field(description="How to turn an image file into the input's pixels.")
    normalisation: Normalisation
    opset: int


def _lock(folder: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(folder, threading.Lock())


def _exported(folder: Path, version: str) -> dict[str, Any]:
    """The bundle's export (made now if it has none); its spec."""
    found = export.read_spec(folder)
    if found is not None:
        return found
    with _lock(folder):
        found = export.read_spec(folder)
        if found is not None:  # made by the request this one waited for
            return found
        try:
            export.export(folder, folder)
        # The reasons name files on the server: they go to the log, not to the client.
        except BundleError as exc:
            log.warning("model %s cannot be exported: %s", version, exc)
            raise conflict(f"model {version} cannot be exported (the API log says "
                           "why)") from None
        except OSError as exc:
            log.warning("the export of model %s cannot be stored: %s", version, exc)
            raise insufficient_storage(f"the export of model {version} cannot be stored (the "
                                       "API log says why)") from None
    found = export.read_spec(folder)
    if found is None:
        raise conflict(f"model {version} cannot be exported (its export cannot be read back)")
    return found


def _known(request: Request, settings: ServiceSettings, version: str) -> None:
    """404 for an unknown version, and under /collections/{name} for another collection's."""
    read_manifest(settings.models_root, version)
    scope = request.path_params.get("collection")
    owning_collection(settings, scope, version, scope is not None)


async def _export_of(settings: ServiceSettings, version: str) -> tuple[Path, dict[str, Any]]:
    """The folder of a known version's bundle (`_known`), holding its export (made now if it
    has none), and the export's spec."""
    folder = settings.models_root / version
    return folder, await run_in_threadpool(_exported, folder, version)


ONNX_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {ONNX_MEDIA: {"schema": {"type": "string", "format": "binary"}}},
          "description": "The ONNX graph (see GET /models/{version}/encoder.onnx.json)"},
    304: {"description": "Not modified (If-None-Match matched the ETag)"}}


@router.get("/models/{version}/encoder.onnx", dependencies=[Reader], response_class=Response,
            responses=ONNX_RESPONSES | problems(401, 403, 404, 409, 422, 507),
            summary="The model's encoder as an ONNX graph: uint8 RGB images [N, S, S, 3] "
            "(S = image_size) -> its L2-normalised embeddings [N, dim], as /embed returns")
async def encoder_onnx(request: Request, settings: SettingsDep,
                       version: str = VERSION_PATH) -> Response:
    _known(request, settings, version)
    tag = f'"onnx-{version}-{export.FORMAT}"'
    headers = {"ETag": tag, "Cache-Control": CACHE_CONTROL, "Vary": "Authorization",
               "X-Model-Version": version}
    if not_modified(request, tag):
        return Response(status_code=304, headers=headers)
    folder, _ = await _export_of(settings, version)
    return FileResponse(folder / export.ONNX_FILE, media_type=ONNX_MEDIA, headers=headers,
                        filename=f"{version}-{export.ONNX_FILE}")


@router.get("/models/{version}/encoder.onnx.json", response_model=OnnxSpec,
            dependencies=[Reader], responses=problems(401, 403, 404, 409, 422, 507),
            summary="What the model's ONNX graph takes and gives (its input size, layout and "
            "preparation; the same text is in the graph's metadata)")
async def encoder_onnx_spec(request: Request, settings: SettingsDep,
                            version: str = VERSION_PATH) -> OnnxSpec:
    _known(request, settings, version)
    _, found = await _export_of(settings, version)
    return OnnxSpec.model_validate(found)

"""Two model versions of one dataset compared on the same items (trainer/compare.py), each
pair computed once (service/comparisons.py)."""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from service.auth import Reader
from service.comparisons import Comparisons
from service.deps import RegistryDep, SettingsDep, served_model
from service.errors import conflict, problems
from service.limits import VERSION_MAX
from service.routes.models import VERSION_PATH
from service.schemas import VERSION, Neighbour
from service.settings import ServiceSettings
from state.datasets import dataset_path
from trainer.bundle import Bundle, read_manifest
from trainer.compare import (
    CHANGED_SHOWN,
    OVERLAP_SAMPLE,
    CannotCompare,
    compare,
)
from trainer.data import open_collection
from trainer.errors import DatasetError

router = APIRouter(tags=["models"])
log = logging.getLogger(__name__)
OTHER_PATH = Path(max_length=VERSION_MAX, pattern=VERSION,
                  description="The model version to compare it with (`b` in the answer).")


class ComparedModel(BaseModel):
    version: str
    created: str | None
    backbone: str | None
    dim: int
    item_count: int = Field(description="Items in the model's bundle.")
    knn_top1: float | None = Field(description="Weighted kNN top-1 on the items in common "
                                   "(see `knn`); null without labels.")
    label_free: float | None = Field(description="Label-free score on the sample of "
                                     "`label_free.items` items (higher is better).")


class KnnComparison(BaseModel):
    protocol: Literal["test", "leave-one-out"] = Field(
        description="`test`: the labelled evaluation split queries the labelled training items; "
        "`leave-one-out`: where only one of them carries labels, each of its labelled items, "
        "the others voting.")
    queries: int
    k: int
    sigma: float
    difference: float = Field(description="b's top-1 minus a's, paired per query.")
    standard_error: float = Field(description="Of the paired difference.")
    margin: float = Field(description="2 standard errors: a difference within it is noise.")


class LabelFreeComparison(BaseModel):
    items: int = Field(description="Items sampled; both models saw the same items and views.")
    augmentation: str
    measure: str = Field(description="What the score measures: `retrieval_log_rank`, the mean "
                         "of 1 - log(1 + r) / log(N) over the views, r the rank of a view's own "
                         "image among the N sampled items.")
    difference: float = Field(description="b's score minus a's.")
    margin: float = Field(description="The smallest difference worth acting on (the score's "
                          "measured noise).")


class Overlap(BaseModel):
    k: int = Field(description="Length of each neighbour list.")
    items: int = Field(description=f"Items sampled (at most {OVERLAP_SAMPLE:,}).")
    mean: float = Field(description="Mean share of an item's k neighbours under a that are "
                        "also among its k neighbours under b (1 = the same lists).")


class ChangedItem(BaseModel):
    id: str
    label: str | None
    overlap: float
    a: list[Neighbour] = Field(description="Its neighbours under a, nearest first.")
    b: list[Neighbour] = Field(description="Its neighbours under b, nearest first.")


class ModelComparison(BaseModel):
    a: ComparedModel
    b: ComparedModel
    dataset: str | None
    common_items: int = Field(description="Items both models hold: everything is measured on "
                              "them.")
    knn: KnnComparison | None
    label_free: LabelFreeComparison | None
    overlap: Overlap
    changed_most: list[ChangedItem] = Field(
        description=f"The (at most {CHANGED_SHOWN}) sampled items whose neighbour lists "
        "overlap least, least first.")
    notes: list[str] = Field(description="Why a figure is missing, what was left out.")


def _comparisons(request: Request) -> Comparisons:
    found = getattr(request.app.state, "comparisons", None)
    if found is None:
        found = request.app.state.comparisons = Comparisons()
    return found


def _same_dataset(settings: ServiceSettings, version: str, other: str) -> None:
    """404 for an unknown version, 409 for two datasets: both known from the manifests,
    before any bundle is loaded."""
    datasets = [read_manifest(settings.models_root, v).get("dataset") for v in (version, other)]
    if datasets[0] != datasets[1]:
        raise conflict(f"version {version} is a model of dataset {datasets[0]!r} and version "
                       f"{other} of dataset {datasets[1]!r}: only models of one dataset can be "
                       "compared on the same items")


def _compute(settings: ServiceSettings, a: Bundle, b: Bundle) -> tuple[dict[str, Any], bool]:
    """The comparison, and whether it may be kept (the dataset was there to measure with)."""
    name = str(a.manifest.get("dataset") or "")
    try:
        path = dataset_path(settings, name)
    except DatasetError:
        return compare(a, b, None, f"dataset {name!r} is not on this server"), False
    try:
        collection = open_collection(path, name)
    except DatasetError as exc:
        log.warning("comparing %s and %s: dataset %r cannot be read: %s", a.version, b.version,
                    name, exc)
        return compare(a, b, None, f"dataset {name!r} cannot be read (the API log says "
                       "why)"), False
    return compare(a, b, collection), True


@router.get("/models/{version}/compare/{other}", response_model=ModelComparison,
            dependencies=[Reader], responses=problems(401, 403, 404, 409, 422, 503),
            summary="Two model versions of one dataset on the same items: kNN and label-free "
            "scores, the overlap of their neighbour lists, the items whose neighbours changed "
            "most",
            description="Measured on the items both versions hold, over samples (at most "
            "5,000 kNN queries, 10,000 items for the label-free score, 1,000 for the overlap "
            "of the top-10 neighbour lists), the first time a pair is asked for; the answer is "
            "kept (bundles never change). 409 for versions of two datasets or with fewer than "
            "2 items in common.")
async def compare_models(request: Request, settings: SettingsDep, registry: RegistryDep,
                         version: str = VERSION_PATH,
                         other: str = OTHER_PATH) -> ModelComparison:
    await run_in_threadpool(_same_dataset, settings, version, other)
    comparisons = _comparisons(request)
    kept = comparisons.peek((version, other))
    if kept is not None:
        return ModelComparison(**kept)
    a = (await served_model(registry, version)).bundle
    b = (await served_model(registry, other)).bundle
    try:
        answer = await comparisons.get((version, other), lambda: _compute(settings, a, b))
    except CannotCompare as exc:
        raise conflict(str(exc)) from None
    return ModelComparison(**answer)

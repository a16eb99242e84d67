"""Request and response shapes. Requests refuse unknown fields and take JSON types as they
are (no "5" for 5); query bodies are built per app from its limits (`query_models`)."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from service.limits import DIM_MAX, FILTER_LABELS, ID_MAX, VERSION_MAX, Limits
from state.jobs import Job
from trainer.label_free import with_measure

# Names and paths a request may give, as anchored patterns for the OpenAPI document and for
# pydantic (whose `$` is the end of the text). Python code uses the compiled `fullmatch`
# forms: in Python's `re`, `$` also matches before a trailing newline.
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
DATASET_NAME = f"^{_NAME}$"
DATASET_NAME_RE = re.compile(_NAME)
_VERSION = rf"[A-Za-z0-9][A-Za-z0-9._+-]{{0,{VERSION_MAX - 1}}}"
VERSION = f"^{_VERSION}$"
VERSION_RE = re.compile(_VERSION)
JOB_ID = r"^[A-Za-z0-9_-]{1,64}$"
# A client's name for one change of the live collection (a UUID, say): see routes/items.py.
IDEMPOTENCY_KEY = r"^[A-Za-z0-9_-]{1,64}$"
# Item ids are paths inside a dataset: any text without control characters.
ITEM_ID = rf"^[^\x00-\x1f\x7f]{{1,{ID_MAX}}}$"
# Characters of Unicode categories Cc, Cf, Zl and Zp (controls, invisible format characters
# such as U+200B and U+202E, line and paragraph separators), as of Python 3.11's Unicode 14;
# tests/service/test_items.py checks the list against unicodedata. BMP ones are written
# \uXXXX, the others as themselves: both read the same in Python, Rust (pydantic) and
# ECMAScript (u flag) patterns.
_INVISIBLE_RANGES = (
    (0x0, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD), (0x600, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD),
    (0x70F, 0x70F), (0x890, 0x891), (0x8E2, 0x8E2), (0x180E, 0x180E), (0x200B, 0x200F),
    (0x2028, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x13438), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F))


def _char(code: int) -> str:
    return f"\\u{code:04x}" if code < 0x10000 else chr(code)


_INVISIBLE = "".join(_char(a) if a == b else f"{_char(a)}-{_char(b)}"
                     for a, b in _INVISIBLE_RANGES)
# A new item's id: a relative path whose parts are not empty, "." or "..", with no backslash
# and no invisible characters (and in NFC, which items.check_id requires: not a pattern's job).
_CHAR = rf"[^/\\{_INVISIBLE}]"
_PART = rf"(?:[^/\\{_INVISIBLE}.]{_CHAR}*|\.[^/\\{_INVISIBLE}.]{_CHAR}*|\.\.{_CHAR}+)"
NEW_ITEM_ID = rf"^{_PART}(?:/{_PART})*$"
LABEL_MAX = 256
LABEL = rf"^[^\x00-\x1f\x7f]{{1,{LABEL_MAX}}}$"
FILTER_TEXT = r"^[^\x00-\x1f\x7f]+$"  # printable text: no control characters
# A folder or archive under the data root: relative, '/'-separated segments that are neither
# empty, '.', '..' nor hidden (dot-first: .meta and upload leftovers), with no control
# characters or backslashes. Written without look-arounds so that generators can use it.
_SEGMENT = r"[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]{0,254}"
DATA_PATH = rf"^{_SEGMENT}(?:/{_SEGMENT}){{0,15}}$"
DATA_PATH_RE = re.compile(DATA_PATH[1:-1])
BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
DOUBLE_MAX = sys.float_info.max


def _integral(value: Any) -> Any:
    # JSON Schema counts 6.0 as an integer; strict pydantic would not.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_integral)]


def is_dataset_name(name: str) -> bool:
    return DATASET_NAME_RE.fullmatch(name) is not None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


LabelText = Annotated[str, Field(min_length=1, max_length=LABEL_MAX, pattern=LABEL)]


class SearchFilter(Strict):
    """Which items a query may answer with (see live/filters.py)."""

    labels: list[LabelText] | None = Field(
        default=None, min_length=1, max_length=FILTER_LABELS, description="Only items of these "
        "classes; a class the model does not have matches no item.")
    prefix: str | None = Field(default=None, min_length=1, max_length=ID_MAX, pattern=FILTER_TEXT,
                               description="Only items whose id starts with this.")


FILTER_FIELD = Field(default=None, description="Only items that match (k hits whenever k do).")


# --- datasets -------------------------------------------------------------------------------

class DatasetRegister(Strict):
    name: str = Field(pattern=DATASET_NAME, description="Name to train with.")
    path: str = Field(
        default=None, max_length=ID_MAX, pattern=DATA_PATH,  # type: ignore[assignment]
        description="Folder or archive under the data root, relative to it (default: the "
        "name itself).")


class DatasetPublic(BaseModel):
    name: str
    items: int
    train_items: int
    eval_items: int
    labelled: bool
    classes: list[str]
    class_counts: dict[str, int]
    splits: dict[str, int]
    ignored_files: int = Field(description="Files that are not images, left out.")
    ignored: list[str] = Field(default_factory=list, description="Up to 100 of them.")
    layout_note: str | None = Field(
        default=None, description="Why a dataset with folders reads as unlabelled, where some "
        "of its images lie outside any folder; null otherwise.")


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


# --- jobs -------------------------------------------------------------------------------------

class TrainRequest(Strict):
    dataset: str = Field(pattern=DATASET_NAME, description="Dataset name.")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Trainer config overrides: the TrainConfig schema (also GET /config).")
    promote: Literal["gate", "always", "never"] = Field(
        default="gate",
        description="What the published model becomes. `gate`: current only when it beats the "
        "current model of its dataset (or, for the first, raw pixels) by more than the noise, "
        "measured on the same items; otherwise a candidate. `always`: current whatever it "
        "measured. `never`: a candidate (promote it by hand).")


JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]


class JobPublic(BaseModel):
    id: str
    dataset: str
    config: dict[str, Any]
    status: JobStatus
    progress: dict[str, Any] = Field(
        description="Latest: phase, round, epoch, loss, lr, anchors, neighbourhood_quality, "
        "images_per_s, eta_s, knn_top1 and label_free (when measured; label_free beside "
        "pixel_label_free and untrained_label_free, and pretrained_label_free for a run from "
        "init_from=imagenet, on label_free_items sampled items, by label_free_measure), "
        "attempt and run_first_epoch (the "
        "epoch where this run of the job began: after its checkpoint when resumed), metrics "
        "(when done).")
    error: str | None
    note: str | None
    model_version: str | None
    promote: Literal["gate", "always", "never"]
    gate: dict[str, Any] = Field(
        description="The promotion gate's verdict once the model is published: promoted, "
        "policy, measure, candidate, incumbent, incumbent_name, margin, items, reason.")
    attempts: int
    cancel_requested: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    heartbeat_at: float | None
    links: dict[str, str]

    @classmethod
    def of(cls, job: Job) -> JobPublic:
        data = job.to_dict()
        data.pop("worker", None)
        progress = with_measure(data["progress"])
        if isinstance(progress.get("metrics"), dict):
            progress = {**progress, "metrics": with_measure(progress["metrics"])}
        data["progress"] = progress
        links = {"self": f"/jobs/{job.id}", "progress": f"/jobs/{job.id}/progress"}
        if job.model_version:
            links["model"] = f"/models/{job.model_version}"
        return cls(**data, links=links)


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


class JobProgress(BaseModel):
    id: str
    epochs: list[dict[str, Any]] = Field(description="One record per finished epoch.")


# --- embeddings, neighbours, search, classification ---------------------------------------------

class EmbedResponse(BaseModel):
    model_version: str
    dim: int
    embeddings: list[list[float]]


class Neighbour(BaseModel):
    id: str
    score: float = Field(description="Cosine similarity.")
    label: str | None


class NeighboursResponse(BaseModel):
    id: str
    model_version: str
    neighbours: list[Neighbour]


class SearchResult(BaseModel):
    neighbours: list[Neighbour]


class SearchResponse(BaseModel):
    model_version: str
    results: list[SearchResult]


class Prediction(BaseModel):
    id: str | None = None
    label: str
    scores: dict[str, float] = Field(description="Per-class share of the vote (sums to 1).")


class ClassifyResponse(BaseModel):
    model_version: str
    k: int
    sigma: float
    predictions: list[Prediction]


# --- models -----------------------------------------------------------------------------------

class ModelSummary(BaseModel):
    version: str
    current: bool
    created: str | None
    dataset: str | None
    backbone: str | None
    dim: int | None
    item_count: int | None
    index_type: str | None
    knn_top1: float | None = Field(description="Weighted kNN top-1, as knn_protocol says.")
    job_id: str | None
    knn_protocol: str | None = Field(default=None, description="'test' (the test split against "
                                     "the training items) or 'leave-one-out'.")
    pixel_knn_top1: float | None = Field(
        default=None, description="The same weighted kNN on raw pixels (the baseline).")
    label_free: float | None = Field(
        default=None, description="The label-free score (no labels needed; higher is better).")
    pixel_label_free: float | None = Field(
        default=None, description="The same label-free score of raw pixels on the same items.")
    recall_at_10: float | None = Field(default=None,
                                       description="Index recall@10 against exact search.")
    gate: dict[str, Any] | None = Field(
        default=None, description="The promotion gate's verdict when it was published "
        "(promoted, policy, measure, candidate, incumbent, incumbent_name, margin, items, "
        "reason); null for a model published from the command line.")


class Item(BaseModel):
    id: str
    label: str | None


class ItemsPublic(BaseModel):
    model_version: str
    data: list[Item]
    count: int
    # Labels to filter by: the bundle's classes, then those that items added since brought.
    classes: list[str]


class ModelsPublic(BaseModel):
    data: list[ModelSummary]
    count: int
    current: str | None
    previous: str | None = Field(
        default=None, description="The version that was current before: what "
        "POST /models/current/rollback makes current again.")


class Health(BaseModel):
    status: str
    checks: dict[str, Any] = Field(default_factory=dict)


# --- query bodies, bounded by the app's limits ------------------------------------------------

@dataclass(frozen=True)
class QueryModels:
    # Built per app from its limits (query_models), so their fields are not known statically:
    # typed Any, as a route reads the fields its model was built with.
    embed: type[Any]
    search: type[Any]
    classify: type[Any]
    add_items: type[Any]
    delete_items: type[Any]


def _one_of(model: Strict, *names: str) -> None:
    given = [n for n in names if n in model.model_fields_set]
    if len(given) != 1:
        raise ValueError(f"send either `{names[0]}` or `{names[1]}`")


@lru_cache(maxsize=8)
def query_models(limits: Limits) -> QueryModels:
    """JSON bodies of /embed, /search and /classify with the bounds of these limits. An absent
    list defaults to empty (not validated); an empty one that is sent fails min_length."""
    image = Annotated[str, Field(max_length=limits.b64_image_chars, pattern=BASE64,
                                 description="A base64-encoded image file.")]

    def images_field() -> Any:
        return Field(default_factory=list, min_length=1, max_length=limits.images,
                     description="Base64-encoded image files.")
    number = Annotated[float, Field(ge=-DOUBLE_MAX, le=DOUBLE_MAX)]
    vector = Annotated[list[number], Field(min_length=1, max_length=DIM_MAX)]
    item = Annotated[str, Field(min_length=1, max_length=ID_MAX, pattern=ITEM_ID)]
    # Each branch an object too (see contract._add_item_bodies).
    either: JsonDict = {"oneOf": [{"type": "object", "required": ["vectors"]},
                                  {"type": "object", "required": ["images"]}]}
    either_ids: JsonDict = {"oneOf": [{"type": "object", "required": ["ids"]},
                                      {"type": "object", "required": ["images"]}]}

    class ImagesRequest(Strict):
        images: list[image] = Field(min_length=1, max_length=limits.images,
                                    description="Base64-encoded image files.")

    class SearchRequest(Strict):
        model_config = ConfigDict(json_schema_extra=either)
        vectors: list[vector] = Field(
            default_factory=list, min_length=1, max_length=limits.images,
            description="Query vectors of the model's dimension, not all zero.")
        images: list[image] = images_field()
        k: JsonInt = Field(default=limits.default_k, ge=1, le=limits.k,
                       description="Neighbours per query.")
        filter: SearchFilter | None = FILTER_FIELD

        @model_validator(mode="after")
        def _either(self) -> SearchRequest:
            _one_of(self, "vectors", "images")
            return self

    class ClassifyRequest(Strict):
        model_config = ConfigDict(json_schema_extra=either_ids)
        ids: list[item] = Field(
            default_factory=list, min_length=1, max_length=limits.images,
            description="Indexed items (their own label is left out).")
        images: list[image] = images_field()
        k: JsonInt = Field(default=limits.default_classify_k, ge=1, le=limits.classify_k,
                       description="Neighbours that vote.")
        sigma: float = Field(default=0.1, gt=0, le=100,
                             description="Vote weight exp(s / sigma).")
        filter: SearchFilter | None = FILTER_FIELD

        @model_validator(mode="after")
        def _either(self) -> ClassifyRequest:
            _one_of(self, "ids", "images")
            return self

    label_text = Annotated[str, Field(min_length=1, max_length=LABEL_MAX, pattern=LABEL,
                                      description="A class label (optional).")]

    new_id = Annotated[str, Field(min_length=1, max_length=ID_MAX, pattern=NEW_ITEM_ID)]

    class NewItem(Strict):
        id: new_id = Field(description="The item's id: a relative path such as "
                         "added/2026-11-27/0001.jpg, in Unicode NFC.")
        image: image
        label: label_text | None = None

    class ItemsAdd(Strict):
        items: list[NewItem] = Field(min_length=1, max_length=limits.images,
                                     description="Items to add, each with its image.")

    class ItemsDelete(Strict):
        ids: list[item] = Field(min_length=1, max_length=limits.items,
                                description="Items to delete (all, or none when one is "
                                "missing).")

    return QueryModels(ImagesRequest, SearchRequest, ClassifyRequest, ItemsAdd, ItemsDelete)

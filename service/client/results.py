"""What the API answers, as typed values: one dataclass per response schema of
service/schemas.py, field for field and in the same order (tests/service/test_client.py
holds the two together). Plain dataclasses rather than those pydantic models: importing the
client must not import the server's settings, pydantic or torch.

Fields a newer API adds are ignored, so that an older client keeps working against it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

if TYPE_CHECKING:
    import numpy as np

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
Promote = Literal["gate", "always", "never"]
ENDED: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})

R = TypeVar("R", bound="Result")


class Result:
    """A response schema's values. NESTED: the fields that hold other results (one, or a
    list)."""

    NESTED: ClassVar[dict[str, type[Result]]] = {}

    @classmethod
    def of(cls: type[R], data: dict[str, Any]) -> R:
        values = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name in data:
                value = data[f.name]
                kind = cls.NESTED.get(f.name)
                if kind is not None and isinstance(value, list):
                    value = [kind.of(v) for v in value]
                elif kind is not None and isinstance(value, dict):
                    value = kind.of(value)
                values[f.name] = value
        return cls(**values)


@dataclass(frozen=True)
class Health(Result):
    status: str
    checks: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Dataset(Result):
    name: str
    items: int
    train_items: int
    eval_items: int
    labelled: bool
    classes: list[str]
    class_counts: dict[str, int]
    splits: dict[str, int]
    ignored_files: int
    ignored: list[str] = field(default_factory=list)
    layout_note: str | None = None


@dataclass(frozen=True)
class Job(Result):
    id: str
    dataset: str
    config: dict[str, Any]
    status: JobStatus
    progress: dict[str, Any]
    error: str | None
    note: str | None
    model_version: str | None
    promote: Promote
    gate: dict[str, Any]
    attempts: int
    cancel_requested: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    heartbeat_at: float | None
    links: dict[str, str]

    @property
    def ended(self) -> bool:
        """Succeeded, failed or canceled: it changes no more."""
        return self.status in ENDED


@dataclass(frozen=True)
class JobProgress(Result):
    id: str
    epochs: list[dict[str, Any]]


@dataclass(frozen=True)
class Embeddings(Result):
    model_version: str
    dim: int
    embeddings: list[list[float]]

    def array(self) -> np.ndarray:
        """The embeddings as one float32 array, a row per image (numpy is imported here
        only)."""
        import numpy as np

        return np.asarray(self.embeddings, dtype=np.float32).reshape(-1, self.dim)


@dataclass(frozen=True)
class Neighbour(Result):
    id: str
    score: float
    label: str | None


@dataclass(frozen=True)
class Neighbours(Result):
    NESTED: ClassVar[dict[str, type[Result]]] = {"neighbours": Neighbour}
    id: str
    model_version: str
    neighbours: list[Neighbour]


@dataclass(frozen=True)
class SearchResult(Result):
    NESTED: ClassVar[dict[str, type[Result]]] = {"neighbours": Neighbour}
    neighbours: list[Neighbour]


@dataclass(frozen=True)
class Search(Result):
    NESTED: ClassVar[dict[str, type[Result]]] = {"results": SearchResult}
    model_version: str
    results: list[SearchResult]


@dataclass(frozen=True)
class Prediction(Result):
    id: str | None  # the item classified by id; None for an image
    label: str
    scores: dict[str, float]


@dataclass(frozen=True)
class Classification(Result):
    NESTED: ClassVar[dict[str, type[Result]]] = {"predictions": Prediction}
    model_version: str
    k: int
    sigma: float
    predictions: list[Prediction]


@dataclass(frozen=True)
class ModelSummary(Result):
    version: str
    current: bool
    created: str | None
    dataset: str | None
    backbone: str | None
    dim: int | None
    item_count: int | None
    index_type: str | None
    knn_top1: float | None
    job_id: str | None
    knn_protocol: str | None = None
    pixel_knn_top1: float | None = None
    label_free: float | None = None
    pixel_label_free: float | None = None
    recall_at_10: float | None = None
    gate: dict[str, Any] | None = None


@dataclass(frozen=True)
class Models(Result):
    NESTED: ClassVar[dict[str, type[Result]]] = {"data": ModelSummary}
    data: list[ModelSummary]
    count: int
    current: str | None
    previous: str | None = None


@dataclass(frozen=True)
class Collection(Result):
    """A collection: a dataset with its own current model, index, change log and keys."""

    NESTED: ClassVar[dict[str, type[Result]]] = {"model": ModelSummary}
    name: str
    default: bool
    current_version: str | None
    previous_version: str | None
    loaded: bool
    item_count: int | None
    model: ModelSummary | None
    images_available: bool
    images_problem: str | None = None


@dataclass(frozen=True)
class Collections(Result):
    NESTED: ClassVar[dict[str, type[Result]]] = {"data": Collection}
    data: list[Collection]
    count: int
    default: str | None = None


@dataclass(frozen=True)
class Item(Result):
    id: str
    label: str | None


@dataclass(frozen=True)
class ItemDetail(Result):
    id: str
    label: str | None
    model_version: str
    dataset: str
    added_at: float | None
    added_with: str | None
    seq: int | None
    links: dict[str, str]


@dataclass(frozen=True)
class DuplicateMatch(Result):
    id: str
    cosine: float


@dataclass(frozen=True)
class ItemDuplicates(Result):
    NESTED: ClassVar[dict[str, type[Result]]] = {"duplicates": DuplicateMatch}
    id: str
    duplicates: list[DuplicateMatch]


@dataclass(frozen=True)
class ItemsChanged(Result):
    NESTED: ClassVar[dict[str, type[Result]]] = {"duplicates": ItemDuplicates}
    model_version: str
    dataset: str
    ids: list[str]
    seq: int
    duplicate_threshold: float | None = None
    duplicates: list[ItemDuplicates] = field(default_factory=list)

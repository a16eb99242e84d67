"""Request and response shapes. Requests refuse unknown fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.jobs import Job

DATASET_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- datasets -------------------------------------------------------------------------------

class DatasetRegister(Strict):
    name: str = Field(pattern=DATASET_NAME, description="Name to train with.")
    path: str | None = Field(
        default=None, max_length=1024,
        description="Folder or archive under the data root (default: the name itself).")


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


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


# --- jobs -------------------------------------------------------------------------------------

class TrainRequest(Strict):
    dataset: str = Field(min_length=1, max_length=256, description="Dataset name.")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Trainer config overrides (see GET /config for every key and default).")
    promote: bool = Field(default=True,
                          description="Make the published model current when the job ends.")


JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]


class JobPublic(BaseModel):
    id: str
    dataset: str
    config: dict[str, Any]
    status: JobStatus
    progress: dict[str, Any] = Field(
        description="Latest: phase, round, epoch, loss, lr, anchors, neighbourhood_quality, "
        "images_per_s, eta_s, knn_top1 (when measured), metrics (when done).")
    error: str | None
    note: str | None
    model_version: str | None
    promote: bool
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

class ImagesRequest(Strict):
    images: list[str] = Field(min_length=1, description="Base64-encoded image files.")


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


class SearchRequest(Strict):
    vectors: list[list[float]] | None = Field(default=None, min_length=1,
                                              description="Query vectors (model dimension).")
    images: list[str] | None = Field(default=None, min_length=1,
                                     description="Base64-encoded query images.")
    k: int = Field(default=10, ge=1, description="Neighbours per query.")


class SearchResult(BaseModel):
    neighbours: list[Neighbour]


class SearchResponse(BaseModel):
    model_version: str
    results: list[SearchResult]


class ClassifyRequest(Strict):
    ids: list[str] | None = Field(default=None, min_length=1,
                                  description="Indexed items (their own label is left out).")
    images: list[str] | None = Field(default=None, min_length=1,
                                     description="Base64-encoded images.")
    k: int = Field(default=200, ge=1, description="Neighbours that vote.")
    sigma: float = Field(default=0.1, gt=0, le=100, description="Vote weight exp(s / sigma).")


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
    knn_top1: float | None
    job_id: str | None
    pixel_knn_top1: float | None = Field(
        default=None, description="The same weighted kNN on raw pixels (the baseline).")
    recall_at_10: float | None = Field(default=None,
                                       description="Index recall@10 against exact search.")


class Item(BaseModel):
    id: str
    label: str | None


class ItemsPublic(BaseModel):
    model_version: str
    data: list[Item]
    count: int


class ModelsPublic(BaseModel):
    data: list[ModelSummary]
    count: int
    current: str | None


class Health(BaseModel):
    status: str
    checks: dict[str, Any] = Field(default_factory=dict)

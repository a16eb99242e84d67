"""What the live collection's routes answer (service/routes/items.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.schemas_duplicates import ItemDuplicates


class ItemsChanged(BaseModel):
    model_version: str = Field(description="The model whose collection changed (and whose "
                               "encoder embedded added images).")
    dataset: str
    ids: list[str]
    seq: int = Field(description="Position of the last change in the dataset's change log.")
    duplicate_threshold: float | None = Field(
        default=None, description="Adds: the cosine (DUPLICATE_THRESHOLD) at or above which "
        "an existing item is listed in `duplicates`.")
    duplicates: list[ItemDuplicates] = Field(
        default_factory=list, description="Adds: the added images that duplicate existing "
        "items, each with those items (images without one are not listed).")


class ItemPublic(BaseModel):
    id: str
    label: str | None
    model_version: str = Field(description="The model serving the item (every vector served "
                               "is this model's).")
    dataset: str
    added_at: float | None = Field(description="When it was added through the API (Unix "
                                   "time); null for items of the dataset's own files.")
    added_with: str | None = Field(description="The model that embedded it when it was "
                                   "added.")
    seq: int | None = Field(description="Its entry in the change log.")
    links: dict[str, str]

"""The bodies of the collection routes (service/routes/collections.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.schemas import ModelSummary


class CollectionPublic(BaseModel):
    name: str = Field(description="The collection's name: the dataset it serves.")
    default: bool = Field(description="Whether the routes outside /collections/{name} serve "
                          "this collection.")
    current_version: str | None = Field(description="The version it serves.")
    previous_version: str | None = Field(
        default=None, description="What POST /collections/{name}/models/current/rollback "
        "makes current again.")
    loaded: bool = Field(description="Whether this API process has the current version "
                         "loaded (a collection loads on its first request).")
    item_count: int | None = Field(
        description="Items it serves: the live count (items added and deleted since the "
        "model was published included) when loaded, else the count the model was published "
        "with.")
    model: ModelSummary | None = Field(description="The current model and its figures.")
    images_available: bool = Field(
        description="Whether the dataset's images are on this server (the image, thumbnail "
        "and item routes need them; queries by vector and by id do not).")
    images_problem: str | None = Field(
        default=None, description="Why its images cannot be shown, said once here rather "
        "than by a 404 per image.")


class CollectionsPublic(BaseModel):
    data: list[CollectionPublic]
    count: int
    default: str | None = Field(description="The collection the routes outside "
                                "/collections/{name} serve (null: none, or several and no "
                                "DEFAULT_COLLECTION).")


class CollectionKey(BaseModel):
    collection: str = Field(description="The collection the key opens.")
    key: str = Field(
        description="The collection's read key, shown in this answer only: the server keeps "
        "its SHA-256 digest. Sent as `Authorization: Bearer <key>`, it opens the read routes "
        "under /collections/{name} and nothing else. A new PUT replaces it.")

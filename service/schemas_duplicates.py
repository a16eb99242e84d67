"""Schemas of near-duplicates: the pairs of a collection, and the existing items an added image
duplicates (in POST /items' answer)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.limits import DUPLICATES_SHOWN


class DuplicateMatch(BaseModel):
    id: str
    cosine: float


class ItemDuplicates(BaseModel):
    id: str = Field(description="An image of the request.")
    duplicates: list[DuplicateMatch] = Field(
        description=f"Existing items at or above the threshold, most similar first (at most "
        f"{DUPLICATES_SHOWN}); the request's own ids are never listed.")


class PairItem(BaseModel):
    id: str
    label: str | None
    image: str = Field(description="The item's image (a path of this API).")


class DuplicatePair(BaseModel):
    a: PairItem
    b: PairItem
    cosine: float


class DuplicatePairs(BaseModel):
    model_version: str
    seq: int = Field(description="The change-log position the pairs were found at: adds and "
                     "deletes up to it are included.")
    threshold: float
    items: int = Field(description="Live items searched.")
    total: int = Field(description="Pairs at or above the threshold.")
    offset: int
    neighbours: int = Field(description="Nearest items asked of the index per item.")
    crowded: int = Field(
        description="Items with at least `neighbours` others at or above the lowest listable "
        "threshold: some of their pairs may be missing (those found from neither end).")
    pairs: list[DuplicatePair] = Field(description="Most similar first; each pair once.")

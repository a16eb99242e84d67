"""The filter of /search, /neighbours and /classify as each form of request spells it: a JSON
body's `filter` object, a multipart form's `labels` (repeated) and `prefix` fields, a GET
route's `labels` (repeated) and `prefix` query parameters. Each becomes one
live.filters.ItemFilter, checked by the same schema (SearchFilter)."""

from __future__ import annotations

from fastapi import Query
from pydantic import ValidationError
from starlette.datastructures import FormData

from live.filters import ANY, ItemFilter
from service.bodies import validation_problem
from service.limits import FILTER_LABELS, ID_MAX
from service.schemas import FILTER_TEXT, SearchFilter

# Multipart fields of /search and /classify, and how many times each may come.
FORM_FIELDS = {"labels": FILTER_LABELS, "prefix": 1}
LABELS_QUERY = Query(None, min_length=1, max_length=FILTER_LABELS,
                     description="Only items of this class (repeat for several: any of them); "
                     "a class the model does not have matches no item.")
PREFIX_QUERY = Query(None, min_length=1, max_length=ID_MAX, pattern=FILTER_TEXT,
                     description="Only items whose id starts with this.")


def from_body(given: SearchFilter | None) -> ItemFilter:
    if given is None:
        return ANY
    return ItemFilter(None if given.labels is None else tuple(given.labels), given.prefix)


def from_form(form: FormData) -> ItemFilter:
    labels = [str(v) for v in form.getlist("labels")]
    prefix = form.get("prefix")
    return from_fields(labels or None, None if prefix is None else str(prefix))


def from_fields(labels: list[str] | None, prefix: str | None) -> ItemFilter:
    try:
        return from_body(SearchFilter.model_validate({"labels": labels, "prefix": prefix}))
    except ValidationError as exc:
        raise validation_problem(exc) from None

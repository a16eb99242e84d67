"""A Python client of the HTTP API, blocking (Client) or awaitable (AsyncClient), and the
command line built on it (`python -m service.client`, cli.py).

    from service.client import Client

    with Client() as api:                 # $AND_API_URL, $ADMIN_API_KEY, $READ_API_KEY
        job = api.wait_for_job(api.train("products", {"backbone": "small_cnn"}).id)
        hits = api.search(["query.jpg"], k=5).results[0].neighbours

    with Client(collection="shoes") as shoes:   # one collection's model, index and items
        hits = shoes.neighbours("boots/0001.jpg", k=5)

Answers are typed (results.py); an error answer raises ApiError with its problem details;
requests turned away (503) are sent again with back-off (core.Retry). It imports neither the
server nor torch: httpx is all it needs (numpy only for Embeddings.array()).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.client.core import DEFAULT_URL, ApiError, Retry
from service.client.results import (
    Classification,
    Collection,
    Collections,
    Dataset,
    Embeddings,
    Health,
    Item,
    ItemDetail,
    ItemsChanged,
    Job,
    JobProgress,
    Models,
    ModelSummary,
    Neighbour,
    Neighbours,
    Prediction,
    Search,
    SearchResult,
)
from service.client.sync import Client

if TYPE_CHECKING:
    from service.client.aio import AsyncClient

__all__ = [
    "DEFAULT_URL", "ApiError", "AsyncClient", "Classification", "Client", "Collection",
    "Collections", "Dataset",
    "Embeddings", "Health", "Item", "ItemDetail", "ItemsChanged", "Job", "JobProgress",
    "ModelSummary", "Models", "Neighbour", "Neighbours", "Prediction", "Retry", "Search",
    "SearchResult",
]


def __getattr__(name: str) -> Any:
    # AsyncClient on first use: asyncio costs a blocking caller a third of the import time.
    if name == "AsyncClient":
        from service.client.aio import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

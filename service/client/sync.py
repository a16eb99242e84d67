"""Client: the API from Python, blocking (over httpx.Client).

    from service.client import Client

    with Client("http://127.0.0.1:8000") as api:       # keys: arguments, else the environment
        found = api.search(["query.jpg"], k=5)
        for item in api.items(prefix="added/"):
            ...

Each method runs one plan of plans.py or collection.py (retries included, see core.py);
AsyncClient (aio.py) runs the same plans.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, TypeVar, cast

import httpx

from service.client import collection, plans
from service.client.core import (
    BATCH,
    CONNECT_S,
    Action,
    Core,
    Emit,
    Plan,
    Retry,
    Send,
    Sleep,
    Stream,
)
from service.client.methods import blocking, iterator

T = TypeVar("T")


class Client:
    """The API at `url` (default $AND_API_URL, else http://127.0.0.1:8000) with the admin key
    (default $ADMIN_API_KEY) for changes and the read key (default $READ_API_KEY, else the
    admin key) for reads. `retry`: when to send a request again (core.Retry); `timeout`:
    seconds to wait for an answer; `batch`: images per request (the API's
    MAX_IMAGES_PER_REQUEST); `http`: an httpx.Client of your own (its base URL the API's);
    `collection` (default $AND_COLLECTION): the collection that embed, neighbours, search,
    classify, the items and the models go to, else the API's default collection."""

    def __init__(self, url: str | None = None, *, admin_key: str | None = None,
                 read_key: str | None = None, retry: Retry | None = None,
                 timeout: float = 600.0, batch: int = BATCH,
                 http: httpx.Client | None = None, collection: str | None = None) -> None:
        self._core = Core.of(url, admin_key, read_key, retry, batch, collection)
        self._http = http or httpx.Client(base_url=self._core.url,
                                          timeout=httpx.Timeout(timeout, connect=CONNECT_S))

    @property
    def url(self) -> str:
        return self._core.url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _perform(self, action: Action) -> Any:
        if isinstance(action, Send):
            try:
                return self._http.send(self._http.build_request(**self._core.request(
                    action.call)))
            except httpx.TransportError as exc:
                return exc
        if isinstance(action, Sleep):
            time.sleep(action.seconds)
        return None

    def _run(self, plan: Plan[T]) -> T:
        outcome = None
        try:
            while True:
                outcome = self._perform(plan.send(outcome))
        except StopIteration as stop:
            return cast(T, stop.value)

    def _iterate(self, stream: Stream[T]) -> Iterator[T]:
        outcome = None
        while True:
            try:
                action = stream.plan.send(outcome)
            except StopIteration:
                return
            if isinstance(action, Emit):
                yield action.value
            outcome = self._perform(action)

    health = blocking(plans.health)
    ready = blocking(plans.ready)
    datasets = blocking(plans.datasets)
    dataset = blocking(plans.dataset)
    upload_dataset = blocking(plans.upload_dataset)
    register_dataset = blocking(plans.register_dataset)
    train = blocking(plans.train)
    job = blocking(plans.job)
    job_progress = blocking(plans.job_progress)
    jobs = iterator(plans.jobs)
    cancel_job = blocking(plans.cancel_job)
    wait_for_job = blocking(plans.wait_for_job)
    collections = blocking(plans.collections)
    models = blocking(plans.models)
    model = blocking(plans.model)
    promote = blocking(plans.promote)
    rollback = blocking(plans.rollback)
    embed = blocking(plans.embed)
    neighbours = blocking(plans.neighbours)
    search = blocking(plans.search)
    search_vectors = blocking(plans.search_vectors)
    classify = blocking(plans.classify)
    classify_items = blocking(plans.classify_items)
    add_items = blocking(collection.add_items)
    add_batches = iterator(collection.add_batches)
    add_archive = blocking(collection.add_archive)
    item = blocking(collection.item)
    delete_items = blocking(collection.delete_items)
    items = iterator(collection.items)
    image = blocking(collection.image)
    thumbnail = blocking(collection.thumbnail)

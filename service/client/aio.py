"""AsyncClient: the API from Python, awaitable (over httpx.AsyncClient).

    from service.client import AsyncClient

    async with AsyncClient("http://127.0.0.1:8000") as api:
        found = await api.search(["query.jpg"], k=5)
        async for item in api.items(prefix="added/"):
            ...

Each method runs the same plan as Client's (plans.py, collection.py; retries in core.py),
awaiting where Client blocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
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
from service.client.methods import async_iterator, awaitable

T = TypeVar("T")


class AsyncClient:
    """As Client (the same arguments; `http`: an httpx.AsyncClient of your own), with every
    method awaitable and the listings async iterators."""

    def __init__(self, url: str | None = None, *, admin_key: str | None = None,
                 read_key: str | None = None, retry: Retry | None = None,
                 timeout: float = 600.0, batch: int = BATCH,
                 http: httpx.AsyncClient | None = None, collection: str | None = None) -> None:
        self._core = Core.of(url, admin_key, read_key, retry, batch, collection)
        self._http = http or httpx.AsyncClient(
            base_url=self._core.url, timeout=httpx.Timeout(timeout, connect=CONNECT_S))

    @property
    def url(self) -> str:
        return self._core.url

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.aclose()

    async def _perform(self, action: Action) -> Any:
        if isinstance(action, Send):
            try:
                return await self._http.send(self._http.build_request(**self._core.request(
                    action.call)))
            except httpx.TransportError as exc:
                return exc
        if isinstance(action, Sleep):
            await asyncio.sleep(action.seconds)
        return None

    async def _run(self, plan: Plan[T]) -> T:
        outcome = None
        try:
            while True:
                outcome = await self._perform(plan.send(outcome))
        except StopIteration as stop:
            return cast(T, stop.value)

    async def _iterate(self, stream: Stream[T]) -> AsyncIterator[T]:
        outcome = None
        while True:
            try:
                action = stream.plan.send(outcome)
            except StopIteration:
                return
            if isinstance(action, Emit):
                yield action.value
            outcome = await self._perform(action)

    health = awaitable(plans.health)
    ready = awaitable(plans.ready)
    datasets = awaitable(plans.datasets)
    dataset = awaitable(plans.dataset)
    upload_dataset = awaitable(plans.upload_dataset)
    register_dataset = awaitable(plans.register_dataset)
    train = awaitable(plans.train)
    job = awaitable(plans.job)
    job_progress = awaitable(plans.job_progress)
    jobs = async_iterator(plans.jobs)
    cancel_job = awaitable(plans.cancel_job)
    wait_for_job = awaitable(plans.wait_for_job)
    collections = awaitable(plans.collections)
    models = awaitable(plans.models)
    model = awaitable(plans.model)
    promote = awaitable(plans.promote)
    rollback = awaitable(plans.rollback)
    embed = awaitable(plans.embed)
    neighbours = awaitable(plans.neighbours)
    search = awaitable(plans.search)
    search_vectors = awaitable(plans.search_vectors)
    classify = awaitable(plans.classify)
    classify_items = awaitable(plans.classify_items)
    add_items = awaitable(collection.add_items)
    add_batches = async_iterator(collection.add_batches)
    add_archive = awaitable(collection.add_archive)
    item = awaitable(collection.item)
    delete_items = awaitable(collection.delete_items)
    items = async_iterator(collection.items)
    image = awaitable(collection.image)
    thumbnail = awaitable(collection.thumbnail)

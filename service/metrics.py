"""Prometheus metrics: request latency per route, embedding batch sizes, each collection's
current model, loaded bytes and unloads, and job counts. One registry per app, so several apps
(tests) never collide."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _JobCounts(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Any:
        family = GaugeMetricFamily("and_jobs", "Training jobs by status", labels=["status"])
        try:
            for status, n in self.counts().items():
                family.add_metric([status], n)
        except Exception:  # a store outage must not break the scrape
            pass
        yield family


class _LoadedBytes(Collector):
    def __init__(self, sizes: Callable[[], dict[str, int]]) -> None:
        self.sizes = sizes

    def collect(self) -> Any:
        family = GaugeMetricFamily(
            "and_collection_loaded_bytes", "Memory the loaded models of a collection take "
            "(vectors, index, encoder; service/memory_budget.py)", labels=["collection"])
        for name, n in self.sizes().items():
            family.add_metric([name], n)
        yield family


class Metrics:
    def __init__(self, job_counts: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "and_http_request_duration_seconds", "HTTP request latency by route",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.embed_batch = Histogram(
            "and_embed_batch_size", "Images per forward pass of the embedding batcher",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.model = Gauge("and_model_info",
                           "The model version each collection serves (value 1)",
                           ["collection", "version"], registry=self.registry)
        self.model_loads = Counter("and_model_loads", "Model bundle loads by outcome",
                                   ["collection", "outcome"], registry=self.registry)
        self.unloads = Counter("and_collection_unloads",
                               "Collections unloaded to stay within SERVE_MEMORY_MB",
                               ["collection"], registry=self.registry)
        self.embed_queue = Gauge("and_embed_queue_images",
                                 "Images waiting for or in embedding",
                                 registry=self.registry)
        self.decodes = Gauge("and_query_decodes_running",
                             "Query image decodes running in the thread pool",
                             registry=self.registry)
        self.registry.register(_JobCounts(job_counts))
        self._versions: dict[str, str] = {}  # collection -> the version its series names
        self._lock = threading.Lock()  # swaps of several collections come from their threads

    def set_model(self, collection: str, version: str) -> None:
        """One series per collection: its previous version's series goes."""
        with self._lock:
            previous = self._versions.get(collection)
            if previous is not None and previous != version:
                self.model.remove(collection, previous)
            self.model.labels(collection, version).set(1)
            self._versions[collection] = version

    def count_load(self, collection: str, version: str, ok: bool) -> None:
        self.model_loads.labels(collection, "loaded" if ok else "failed").inc()

    def count_unload(self, collection: str) -> None:
        self.unloads.labels(collection).inc()

    def watch_collections(self, sizes: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_LoadedBytes(sizes))

    def watch(self, decoder: Any, batcher: Any) -> None:
        self.decodes.set_function(lambda: decoder.running)
        self.embed_queue.set_function(lambda: batcher.pending_images)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Times every HTTP request under its route template (not the raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.latency.labels(scope["method"], template, str(status[0])).observe(
                time.perf_counter() - start)

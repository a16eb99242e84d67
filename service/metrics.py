"""Prometheus metrics: request latency per route, embedding batch sizes, the current model and
job counts. One registry per app, so several apps (tests) never collide."""

from __future__ import annotations

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


class Metrics:
    def __init__(self, job_counts: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "and_http_request_duration_seconds", "HTTP request latency by route",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.embed_batch = Histogram(
            "and_embed_batch_size", "Images per forward pass of the embedding batcher",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.model = Gauge("and_model_info", "The model version being served (value 1)",
                           ["version"], registry=self.registry)
        self.model_loads = Counter("and_model_loads", "Model bundle loads by outcome",
                                   ["outcome"], registry=self.registry)
        self.embed_queue = Gauge("and_embed_queue_images",
                                 "Images waiting for or in embedding",
                                 registry=self.registry)
        self.decodes = Gauge("and_query_decodes_running",
                             "Query image decodes running in the thread pool",
                             registry=self.registry)
        self.registry.register(_JobCounts(job_counts))
        self._version: str | None = None

    def set_model(self, version: str) -> None:
        if self._version is not None:
            self.model.remove(self._version)
        self.model.labels(version).set(1)
        self._version = version

    def count_load(self, version: str, ok: bool) -> None:
        self.model_loads.labels("loaded" if ok else "failed").inc()

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

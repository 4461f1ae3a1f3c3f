"""Prometheus metrics of one server: requests, latency, queue depth, clips/s, batching, model version.

Each app has its own `CollectorRegistry`, so several apps in one process (tests) never share counters.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The server's counters (`RequestRecorder` counts the requests)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tubelet_requests", "HTTP requests", ["path", "status"], registry=r)
        self.latency = Histogram(
            "tubelet_request_seconds", "request latency", ["path"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("tubelet_queue_depth", "predict requests waiting for the batcher", registry=r)
        self.clips = Counter("tubelet_clips", "windows run through the model", registry=r)
        self.clips_per_second = Gauge("tubelet_clips_per_second", "windows per second of the last forward", registry=r)
        self.batch_requests = Histogram(
            "tubelet_batch_requests", "requests per batched forward", buckets=(1, 2, 3, 4, 6, 8, 16, 32), registry=r
        )
        self.model_version = Gauge("tubelet_model_version", "version of the model served (1 + reloads)", registry=r)
        self.reload_errors = Counter("tubelet_reload_errors", "reloads that failed (old model kept)", registry=r)

    def on_group(self, requests: int, clips: int, seconds: float) -> None:
        """A batched forward ran: `requests` requests, `clips` windows, in `seconds`."""
        self.batch_requests.observe(requests)
        self.clips.inc(clips)
        self.clips_per_second.set(clips / seconds if seconds > 0 else 0.0)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class RequestRecorder:
    """ASGI middleware: every HTTP request counted and timed in `metrics`, by route (no label per file id)."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began, status = time.perf_counter(), 500

        async def watched(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - began)

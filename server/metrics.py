"""Prometheus metrics: HTTP requests, reconstruction job durations, connected sockets and open rooms.

Each application has its own registry (tests run several apps in one process). Served at ``GET /metrics``;
server/middleware/metrics.py records the requests.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "theatrum_http_requests", "HTTP requests by method, route and status",
            ["method", "route", "status"], registry=self.registry,
        )
        self.request_seconds = Histogram(
            "theatrum_http_request_seconds", "HTTP request latency", ["route"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.job_seconds = Histogram(
            "theatrum_job_duration_seconds", "Reconstruction job wall time", registry=self.registry,
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
        )
        self.sockets = Gauge("theatrum_sockets", "Connected socket.io clients", registry=self.registry)
        self.rooms = Gauge("theatrum_rooms", "Open collaboration rooms", registry=self.registry)
        self.jobs_queued = Gauge("theatrum_jobs_queued", "Reconstruction jobs waiting", registry=self.registry)
        self.violations = Counter("theatrum_violations", "Messages of room members refused as violations",
                                  registry=self.registry)
        self.dropped_sockets = Counter("theatrum_dropped_sockets", "Sockets closed for not reading what they were sent",
                                       registry=self.registry)

    def observe_job(self, seconds: float) -> None:
        self.job_seconds.observe(seconds)

    def exposition(self, queued_jobs: int) -> web.Response:
        """The Prometheus text exposition of every metric."""
        self.jobs_queued.set(queued_jobs)
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

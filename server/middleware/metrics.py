"""Request metrics: count and time every HTTP request by method, route and status (server/metrics.py)."""

from __future__ import annotations

import time

from aiohttp import web

from server.metrics import Metrics


def metrics_middleware(metrics: Metrics):
    """The middleware that records each request in `metrics`."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            info = request.match_info.route.resource
            route = info.canonical if info is not None else "unmatched"
            metrics.requests.labels(request.method, route, str(status)).inc()
            metrics.request_seconds.labels(route).observe(time.perf_counter() - start)

    return middleware

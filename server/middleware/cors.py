"""CORS: off by default; when origins are configured, only those get CORS headers (and preflights)."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

ALLOW_HEADERS = "Authorization, Content-Type, If-None-Match, Range"
ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"


def cors_middleware(origins: Iterable[str]):
    allowed = frozenset(origins)

    @web.middleware
    async def middleware(request: web.Request, handler):
        origin = request.headers.get("Origin")
        ok = origin is not None and (origin in allowed or "*" in allowed)
        if request.method == "OPTIONS" and ok and "Access-Control-Request-Method" in request.headers:
            response = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        if ok:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "ETag, Content-Range, Content-Length"
            response.headers.add("Vary", "Origin")
        return response

    return middleware

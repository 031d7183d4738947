"""HTTP errors as JSON: every 4xx/5xx body is ``{"error": code, "detail": text}``."""

from __future__ import annotations

import json
import logging

from aiohttp import web

log = logging.getLogger("theatrum.http")


class ApiError(Exception):
    """Raised by handlers; the middleware turns it into a JSON response."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": code, "detail": detail}),
        content_type="application/json",
        headers=headers,
    )


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          406: "not_acceptable", 409: "conflict", 411: "length_required", 413: "too_large",
          415: "unsupported_media_type", 416: "range_not_satisfiable", 422: "unprocessable", 429: "too_many_requests"}


@web.middleware
async def json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiError as e:
        return error_response(e.status, e.code, e.detail, e.headers)
    except web.HTTPException as e:
        if e.status < 400 or not request.path.startswith(("/api", "/metrics")):
            raise
        headers = {k: v for k, v in e.headers.items() if k.lower() in ("allow", "content-range", "www-authenticate")}
        return error_response(e.status, _CODES.get(e.status, "http_error"), e.reason, headers)
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "the server failed; see its log")


async def read_json(request: web.Request) -> dict:
    """The request body as a JSON object, or a 400/415 ApiError."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "the body must be a JSON object")
    return body

"""Errors as JSON: an ApiError, an HTTP exception or an internal failure under /api becomes ``{"error", "detail"}``."""

from __future__ import annotations

import logging

from aiohttp import web

from server.api.errors import ApiError, error_response
from server.services.errors import (
    Busy,
    Conflict,
    Invalid,
    NotFound,
    ServiceError,
    TooLarge,
    Unavailable,
    UpstreamError,
)
from server.storage.errors import CorruptStoreError, StorageError, StorageFullError, is_disk_full

log = logging.getLogger("theatrum.http")


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          406: "not_acceptable", 409: "conflict", 411: "length_required", 413: "too_large",
          415: "unsupported_media_type", 416: "range_not_satisfiable", 422: "unprocessable", 429: "too_many_requests"}


# The HTTP status of each service error (server/services/errors.py).
SERVICE_STATUS: dict[type[ServiceError], int] = {
    Invalid: 400, NotFound: 404, Conflict: 409, TooLarge: 413, Busy: 429, UpstreamError: 502, Unavailable: 503,
    ServiceError: 400,
}


def service_status(error: ServiceError) -> int:
    """The HTTP status of a service error: its class's, or its nearest base class's."""
    return next(SERVICE_STATUS[kind] for kind in type(error).__mro__ if kind in SERVICE_STATUS)


@web.middleware
async def json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiError as e:
        return error_response(e.status, e.code, e.detail, e.headers)
    except ServiceError as e:
        headers = {"Retry-After": str(e.retry_after)} if e.retry_after is not None else None
        return error_response(service_status(e), e.code, e.detail, headers)
    except StorageFullError:
        return _disk_full(request)
    except CorruptStoreError as e:
        log.error("%s %s refused: %s", request.method, request.path, e)
        return error_response(503, "integrity", "stored data failed its integrity check, so the server will not "
                                                "serve it; its log names the file")
    except StorageError:
        log.exception("%s %s: storage failed", request.method, request.path)
        return error_response(503, "unavailable", "the server cannot read or write its storage now")
    except web.HTTPException as e:
        if e.status < 400 or not request.path.startswith(("/api", "/metrics")):
            raise
        headers = {k: v for k, v in e.headers.items() if k.lower() in ("allow", "content-range", "www-authenticate")}
        return error_response(e.status, _CODES.get(e.status, "http_error"), e.reason, headers)
    except Exception as e:
        if is_disk_full(e):  # a file write (an upload, an artifact) found no space
            return _disk_full(request)
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "the server failed; see its log")


def _disk_full(request: web.Request) -> web.Response:
    log.error("%s %s: the disk is full", request.method, request.path)
    return error_response(507, "insufficient_storage",
                          "the server's disk is full: nothing was stored; free some space and try again")

"""The API's errors: every 4xx/5xx body is ``{"error": code, "detail": text}``.

Handlers raise `ApiError`; server/middleware/errors.py turns it (and a service's own error, see
server/services/errors.py) into the JSON response.
"""

from __future__ import annotations

import json
from typing import TypeVar

from aiohttp import web

T = TypeVar("T")


class ApiError(Exception):
    """An HTTP error answer: status, a machine-readable code, a readable detail, optional headers."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    """The JSON error response."""
    return web.Response(status=status, text=json.dumps({"error": code, "detail": detail}),
                        content_type="application/json", headers=headers)


def found(value: T | None, what: str, key: str) -> T:
    """`value`, or a 404 naming `what` (a study, a mesh...) and its `key` when it is None."""
    if value is None:
        raise ApiError(404, "not_found", f"no {what} {key!r}")
    return value

"""Reading a request: its JSON body and its integer query parameters, or a 4xx ApiError."""

from __future__ import annotations

import json
import math

from aiohttp import web

from server.api.errors import ApiError
from sessions.ledger.canonical import MAX_NESTING, too_deep


async def read_json(request: web.Request) -> dict:
    """The request body as a JSON object, or a 400/415 ApiError."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        text = await request.text()
    except UnicodeDecodeError as e:
        raise ApiError(400, "malformed_json", f"the body is not UTF-8: {e}") from None
    if too_deep(text):
        raise ApiError(400, "malformed_json", f"the body nests deeper than {MAX_NESTING} levels")
    try:
        body = json.loads(text)
    except ValueError as e:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "the body must be a JSON object")
    return body


def query_int(request: web.Request, name: str, *, default: int | None = None, low: int = 0) -> int:
    """Query parameter `name` as an integer >= `low`; `default` when absent or empty (None: it is required)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ApiError(400, "bad_parameter", f"{name} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name} must be an integer") from None
    if value < low:
        raise ApiError(400, "bad_parameter", f"{name} must be >= {low}")
    return value


def query_float(request: web.Request, name: str, *, default: float | None = None) -> float | None:
    """Query parameter `name` as a finite number; `default` when absent or empty."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name} must be a number") from None
    if not math.isfinite(value):
        raise ApiError(400, "bad_parameter", f"{name} must be finite")
    return value


def query_vector(request: web.Request, name: str) -> tuple[float, float, float]:
    """Required query parameter `name` as three finite numbers "x,y,z"."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        raise ApiError(400, "bad_parameter", f"{name} is required (x,y,z)")
    parts = raw.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ApiError(400, "bad_parameter", f"{name} must be three finite numbers x,y,z")
    return values  # type: ignore[return-value]

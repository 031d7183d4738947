"""The OpenAPI 3.1 document of the HTTP API, kept in docs/openapi.json and served at /api/openapi.json.

A test keeps it true: every route is documented, and schemathesis checks responses against it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from aiohttp import web

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


@cache
def openapi_document() -> dict:
    return json.loads(DOCUMENT.read_text())


async def openapi_handler(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())

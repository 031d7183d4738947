"""gzip for API responses: JSON and other text bodies over 1 KiB go compressed when the client accepts it.

GLB artifacts handle their own encoding (server/api/glb.py): Draco is already compact, and ranges of a plain GLB
must stay byte ranges of the file.
"""

from __future__ import annotations

from aiohttp import web

COMPRESSIBLE = ("application/json", "text/", "application/javascript", "image/svg+xml")
MIN_BYTES = 1024


@web.middleware
async def gzip_middleware(request: web.Request, handler):
    response = await handler(request)
    if (
        isinstance(response, web.Response)
        and "Content-Encoding" not in response.headers
        and response.status == 200
        and response.content_type.startswith(COMPRESSIBLE)
        and response.body is not None
        and len(response.body) >= MIN_BYTES
        and "gzip" in request.headers.get("Accept-Encoding", "")
    ):
        response.enable_compression(web.ContentCoding.gzip)
    return response

"""Mesh delivery: ``GET /api/meshes/{id}.glb`` with ETag/304, immutable caching, Range and compression.

Artifacts are immutable and content-addressed, so the ETag is the artifact's SHA-256. Variants:
- ``?format=draco`` (the default): a Draco-compressed GLB (KHR_draco_mesh_compression), already compact;
- ``?format=plain``: the uncompressed GLB, gzip-encoded when the client accepts it and asked for no range;
- ``?lod=0``: the coarse level of detail (at most 30,000 triangles) for a fast first picture.
Responses are ``Cache-Control: private, immutable``: patient anatomy must not sit in shared caches.
"""

from __future__ import annotations

import asyncio
import gzip
import re

from aiohttp import web

from server.api.errors import ApiError

CACHE_CONTROL = "private, max-age=31536000, immutable"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
FORMATS = ("draco", "plain")


def artifact_kind(fmt: str, lod: str | None) -> str:
    """Map query parameters to an artifact kind: full, lod0, draco, draco_lod0."""
    if fmt not in FORMATS:
        raise ApiError(400, "bad_parameter", f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if lod not in (None, "0", "full"):
        raise ApiError(400, "bad_parameter", f"lod must be 0 or full, got {lod!r}")
    coarse = lod == "0"
    if fmt == "draco":
        return "draco_lod0" if coarse else "draco"
    return "lod0" if coarse else "full"


def parse_range(header: str, size: int) -> tuple[int, int]:
    """Parse a single ``bytes=a-b`` range into [start, end). Requires size > 0; raises 416 when unsatisfiable."""
    m = _RANGE.match(header.strip())
    if not m or (m.group(1) == "" and m.group(2) == ""):
        raise ApiError(416, "range_not_satisfiable", f"unsupported Range {header!r}",
                       {"Content-Range": f"bytes */{size}"})
    first, last = m.group(1), m.group(2)
    if first == "":  # suffix range: the last N bytes
        n = int(last)
        if n == 0:
            raise ApiError(416, "range_not_satisfiable", "empty suffix range", {"Content-Range": f"bytes */{size}"})
        return max(0, size - n), size
    start = int(first)
    end = size if last == "" else min(size, int(last) + 1)
    if start >= size or end <= start:
        raise ApiError(416, "range_not_satisfiable", f"Range {header!r} is outside 0-{size - 1}",
                       {"Content-Range": f"bytes */{size}"})
    return start, end


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or etag in tags or f"W/{etag}" in tags


async def send_glb(request: web.Request, digest: str, data_path, *, compressible: bool) -> web.StreamResponse:
    """Serve one immutable artifact file with ETag, Range and (for plain GLB) gzip."""
    etag = f'"{digest}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Accept-Ranges": "bytes",
               "Vary": "Accept-Encoding"}
    inm = request.headers.get("If-None-Match")
    if etag_matches(inm, etag) or etag_matches(inm, f'"{digest}-gzip"'):
        return web.Response(status=304, headers=headers)
    data = data_path.read_bytes()
    range_header = request.headers.get("Range")
    if range_header and request.headers.get("If-Range", etag) == etag:
        start, end = parse_range(range_header, len(data))
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        return web.Response(status=206, body=data[start:end], headers=headers, content_type="model/gltf-binary")
    if compressible and "gzip" in request.headers.get("Accept-Encoding", ""):
        body = await asyncio.get_running_loop().run_in_executor(None, gzip.compress, data, 6)
        headers["Content-Encoding"] = "gzip"
        headers["ETag"] = f'"{digest}-gzip"'
        return web.Response(body=body, headers=headers, content_type="model/gltf-binary")
    return web.Response(body=data, headers=headers, content_type="model/gltf-binary")

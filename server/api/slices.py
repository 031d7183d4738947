"""HTTP handlers of slices: a room's series on an oblique plane (PNG or int16 values), and the series'
geometry and window presets that a client places its planes with. The admin may read any room's; an invite
its own room's only (server/middleware/auth.py, INVITE_ROUTES).

The image of a plane over one series' pixels never changes, so it carries an ETag over the series' content
address, the plane, the window and the code version, and may be cached by the one client that asked.
"""

from __future__ import annotations

import hashlib

from aiohttp import web

from reconstruction import __version__
from reconstruction.reslice import Plane, PlaneError
from server.api.errors import ApiError
from server.api.params import query_float, query_int, query_vector
from server.api.rooms import room_or_404
from server.appkeys import SLICES
from server.services.slices import FORMATS
from sessions.limits import RoomLimits

DEFAULT_PX = 512  # what a client asks for once a plane stops moving
COARSE_PX = 128  # what it asks for while a plane moves: a sixteenth of the pixels, so dragging feels live
MAX_WINDOW = RoomLimits.max_window  # as a shared plane's window and level


def _series(request: web.Request) -> dict:
    room = room_or_404(request).room.state.room
    series = request.query.get("series") or None
    return request.app[SLICES].series_for(room["study"], list(room["meshes"]), series)


def _plane(request: web.Request) -> Plane:
    width = query_float(request, "width_mm")
    if width is None:
        raise ApiError(400, "bad_parameter", "width_mm is required")
    height = query_float(request, "height_mm", default=width)
    px = query_int(request, "px", default=DEFAULT_PX)
    try:
        return Plane.checked(query_vector(request, "origin"), query_vector(request, "u"), query_vector(request, "v"),
                             width, height, px)
    except PlaneError as e:
        raise ApiError(400, "bad_plane", str(e)) from None


async def get_slice(request: web.Request) -> web.Response:
    """GET /api/rooms/{room_id}/slice: the room's series on a plane, as PNG (windowed) or int16 values."""
    room_or_404(request)
    plane = _plane(request)
    fmt = request.query.get("format") or "png"
    if fmt not in FORMATS:
        raise ApiError(400, "bad_parameter", f"format must be one of {list(FORMATS)}")
    width, level = query_float(request, "window"), query_float(request, "level")
    if width is not None and not 0 < width <= MAX_WINDOW:
        raise ApiError(400, "bad_parameter", f"window must be positive, at most {MAX_WINDOW:g}")
    if level is not None and abs(level) > MAX_WINDOW:
        raise ApiError(400, "bad_parameter", f"level must be within ±{MAX_WINDOW:g}")
    series = _series(request)
    key = [series["input_hash"], __version__, fmt, plane.origin, plane.u, plane.v, plane.width_mm, plane.height_mm,
           plane.columns, width, level]
    etag = '"' + hashlib.sha256(repr(key).encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=86400"}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    image = await request.app[SLICES].image(series, plane, fmt, width, level)
    headers["X-Slice-Shape"] = f"{image.rows},{image.columns}"
    if image.window is not None:
        headers["X-Slice-Window"] = f"{image.window.width:g},{image.window.level:g}"
    return web.Response(body=image.body, content_type=image.content_type, headers=headers)


async def get_volume(request: web.Request) -> web.Response:
    """GET /api/rooms/{room_id}/volume: the geometry (LPS mm) and window presets of the room's series."""
    series = _series(request)
    return web.json_response(await request.app[SLICES].info(series))


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/rooms/{room_id}/slice", get_slice),
        web.get("/api/rooms/{room_id}/volume", get_volume),
    ]

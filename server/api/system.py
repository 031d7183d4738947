"""HTTP handlers of the server itself: health, the OpenAPI document, the client's configuration, and the
Prometheus metrics (at /metrics, outside the API).

`GET /api/config` tells a client the server's tables (presets per modality, the identifying presets, the
triangle budgets, the room limits, the permission matrix, the slices' window presets and image sizes) so that
the web client copies none of them.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from functools import cache
from pathlib import Path

from aiohttp import web

from reconstruction import __version__
from reconstruction.presets import preset_names_for, presets_for
from reconstruction.reslice import MAX_COLUMNS, MIN_COLUMNS
from reconstruction.surface import DEFAULT_TARGET_TRIANGLES
from reconstruction.windows import CT_WINDOWS, MR_PERCENTILES
from server.api.rooms import IDENTIFYING_PRESETS
from server.api.slices import COARSE_PX, DEFAULT_PX
from server.appkeys import JOBS, METRICS, SETTINGS
from server.services.meshes import MAX_TRIANGLES, MIN_TRIANGLES, TRIANGLE_CHOICES
from server.services.playback import MAX_REPLAY_SPEED
from sessions.protocol import permissions_table
from sessions.room import MAX_TITLE_LENGTH

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
MODALITIES = ("CT", "MR")


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "queued_jobs": request.app[JOBS].queued_count()})


@cache
def openapi_document() -> dict:
    """docs/openapi.json, read once."""
    return json.loads(OPENAPI.read_text())


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def config(request: web.Request) -> web.Response:
    """GET /api/config: the tables a client renders. Public: the join page needs them before any token, and
    nothing in them is about a patient or a room."""
    limits = request.app[SETTINGS].room_limits
    return web.json_response({
        "version": __version__,
        "modalities": {m: {"presets": list(presets_for(m)), "default_presets": preset_names_for(m)}
                       for m in MODALITIES},
        "identifying_presets": sorted(IDENTIFYING_PRESETS),
        "target_triangles": {"default": DEFAULT_TARGET_TRIANGLES, "min": MIN_TRIANGLES, "max": MAX_TRIANGLES,
                             "choices": list(TRIANGLE_CHOICES)},
        "room_limits": {**asdict(limits), "max_title_length": MAX_TITLE_LENGTH},
        "pose_limits": asdict(request.app[SETTINGS].pose_limits),
        "permissions": permissions_table(),
        "replay": {"max_speed": MAX_REPLAY_SPEED},
        "pacs": {"configured": bool(request.app[SETTINGS].pacs_url.strip())},
        "slices": {
            "windows": {"CT": [w.to_json() for w in CT_WINDOWS],
                        "MR": [{"name": name, "low_percentile": low, "high_percentile": high, "body_only": body}
                               for name, low, high, body in MR_PERCENTILES]},
            "px": {"min": MIN_COLUMNS, "max": MAX_COLUMNS, "coarse": COARSE_PX, "full": DEFAULT_PX},
        },
    })


async def metrics(request: web.Request) -> web.Response:
    return request.app[METRICS].exposition(request.app[JOBS].queued_count())


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/health", health),
        web.get("/api/openapi.json", openapi),
        web.get("/api/config", config),
    ]

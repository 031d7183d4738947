"""HTTP handler of voice: what a room's clients need to set up their WebRTC calls. The admin may read any room's;
an invite its own room's only (server/middleware/auth.py, INVITE_ROUTES).

The ICE servers (THEATRUM_ICE_SERVERS) are here rather than in the public /api/config because a TURN server's
credentials let whoever holds them relay traffic through it: only the people of a room get them.
"""

from __future__ import annotations

from aiohttp import web

from server.api.rooms import room_or_404
from server.appkeys import SETTINGS


async def get_voice(request: web.Request) -> web.Response:
    """GET /api/rooms/{room_id}/voice: {ice_servers, max_open_mics, max_signal_bytes}."""
    room_or_404(request)
    settings = request.app[SETTINGS]
    limits = settings.room_limits
    return web.json_response({"ice_servers": settings.ice_server_list, "max_open_mics": limits.max_open_mics,
                              "max_signal_bytes": limits.max_signal_bytes},
                             headers={"Cache-Control": "private, no-store"})


def routes() -> list[web.RouteDef]:
    return [web.get("/api/rooms/{room_id}/voice", get_voice)]

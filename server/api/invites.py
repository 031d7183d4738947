"""HTTP handlers of invites: mint a personal invite, show a role invite's QR code, and redeem a room code."""

from __future__ import annotations

import math
import time

from aiohttp import web

from server.api.errors import ApiError
from server.api.params import read_json
from server.api.rooms import display_name_or_400, invite_view, role_or_400, room_or_404
from server.appkeys import HUB, SETTINGS
from server.services.invites import InviteError, RoomNotOpenError, invite_link, normalise_code, qr_png
from sessions.roles import Role


async def create_invite(request: web.Request) -> web.Response:
    """A personal invite (a new participant) for one role; on a closed room it is good for a replay only."""
    live = room_or_404(request)
    body = await read_json(request)
    unknown = set(body) - {"role", "name", "ttl"}
    if unknown:
        raise ApiError(400, "bad_parameter", f"unknown field(s): {', '.join(sorted(unknown))}")
    role, name = role_or_400(body.get("role")), display_name_or_400(body.get("name"))
    ttl = body.get("ttl", request.app[SETTINGS].invite_ttl)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 60 <= ttl <= 30 * 86_400:
        raise ApiError(400, "bad_parameter", "ttl must be an integer number of seconds in [60, 2592000]")
    token, exp = request.app[HUB].issue_invite(live, role, name, ttl)
    return web.json_response(invite_view(request, live, role, name, token, exp), status=201)


async def invite_qr(request: web.Request) -> web.Response:
    live = room_or_404(request)
    try:
        role = Role(request.match_info["role"])
    except ValueError:
        raise ApiError(404, "not_found", f"no role {request.match_info['role']!r}") from None
    if live.room.closed:
        raise ApiError(409, "conflict", f"room {live.id} is closed")
    token, exp = request.app[HUB].role_invite(live, role)
    if exp <= time.time():
        raise ApiError(410, "expired",
                       "the room's invites have expired; mint one with POST /api/rooms/{id}/invites")
    png = qr_png(invite_link(request.app[SETTINGS].base_url, token))
    return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "no-store"})


async def join(request: web.Request) -> web.Response:
    """POST /api/join {code, name}: a room code redeemed for a personal invite. Public; wrong codes are
    throttled (server/services/invites.py JoinThrottle), right ones are not."""
    body = await _fields(request, {"code", "name"})
    try:
        code = normalise_code(body.get("code"))
    except InviteError as e:
        raise ApiError(400, "bad_parameter", str(e)) from None
    name = display_name_or_400(body.get("name"))
    hub = request.app[HUB]
    live, role, token, exp = _throttled(request, code, lambda: hub.redeem_code(code, name))
    return web.json_response({"room": live.id, **invite_view(request, live, role, name, token, exp)}, status=201)


async def exchange(request: web.Request) -> web.Response:
    """POST /api/invites/exchange {token, name}: a room's role link (what its QR code holds) exchanged for a
    personal invite, so that everyone who opens the link is a participant of their own. Public, throttled
    like room codes."""
    body = await _fields(request, {"token", "name"})
    token = body.get("token")
    if not isinstance(token, str) or not token:
        raise ApiError(400, "bad_parameter", "token must be the role link's token")
    name = display_name_or_400(body.get("name"))
    hub = request.app[HUB]
    live, role, personal, exp = _throttled(request, None, lambda: hub.exchange(token, name))
    return web.json_response({"room": live.id, **invite_view(request, live, role, name, personal, exp)},
                             status=201)


async def _fields(request: web.Request, allowed: set[str]) -> dict:
    body = await read_json(request)
    unknown = set(body) - allowed
    if unknown:
        raise ApiError(400, "bad_parameter", f"unknown field(s): {', '.join(sorted(unknown))}")
    return body


def _throttled(request: web.Request, code: str | None, redeem):
    """`redeem()` unless the caller must wait (429); a refusal (InviteError) counts against the caller (404)."""
    throttle, address = request.app[HUB].join_throttle, request.remote or "?"
    wait = throttle.wait(address, code)
    if wait > 0:
        raise ApiError(429, "too_many_requests", "too many wrong attempts; wait and try again",
                       {"Retry-After": str(max(1, math.ceil(wait)))})
    try:
        result = redeem()
    except RoomNotOpenError as e:
        raise ApiError(409, "conflict", str(e)) from None
    except InviteError as e:
        throttle.failed(address, code)
        raise ApiError(404, "not_found", str(e)) from None
    throttle.succeeded(address)
    return result


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/rooms/{room_id}/invites", create_invite),
        web.get("/api/rooms/{room_id}/invites/{role}.png", invite_qr),
        web.post("/api/join", join),
        web.post("/api/invites/exchange", exchange),
    ]

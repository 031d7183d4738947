"""Access: the bearer-token middleware (the admin token is created by server/storage/keys.py).

Every ``/api`` endpoint except the public ones (``/api/health``, ``/api/config``, ``/api/ledger/key``,
``/api/join`` and ``/api/invites/exchange``, which redeem a room code or a role link and are throttled)
requires ``Authorization: Bearer <admin token>``.
A room invite (server/services/invites.py) is a narrower bearer token: it may call only the endpoints of
``INVITE_ROUTES``, and only for its own room and that room's meshes. The token may also arrive as
``?token=`` on the login URL the server prints; the web client moves it into the header.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from server.api.errors import error_response
from server.appkeys import ADMIN_TOKEN, HUB

PUBLIC_PATHS = frozenset({"/api/health", "/api/config", "/api/join", "/api/invites/exchange", "/api/ledger/key"})

# What a room invite may call: (method, route) -> the path parameter that must be its room ("room_id") or
# one of its room's meshes ("mesh_id"). Everything else needs the admin token.
INVITE_ROUTES = {
    ("GET", "/api/meshes/{mesh_id}.glb"): "mesh_id",
    ("GET", "/api/rooms/{room_id}"): "room_id",
    ("GET", "/api/rooms/{room_id}/events"): "room_id",
    ("GET", "/api/rooms/{room_id}/slice"): "room_id",
    ("GET", "/api/rooms/{room_id}/volume"): "room_id",
    ("GET", "/api/rooms/{room_id}/voice"): "room_id",
}


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def is_admin(request: web.Request) -> bool:
    token = bearer_token(request)
    admin = request.app[ADMIN_TOKEN].encode()
    return token is not None and hmac.compare_digest(token.encode("utf-8", "surrogatepass"), admin)


def invite_allows(request: web.Request, token: str) -> bool:
    """Whether ``token`` is a valid room invite and this request is in its scope (see ``INVITE_ROUTES``)."""
    resource = request.match_info.route.resource
    method = "GET" if request.method == "HEAD" else request.method
    route = (method, resource.canonical if resource is not None else "")
    hub = request.app.get(HUB)
    parameter = INVITE_ROUTES.get(route)
    if parameter is None or hub is None:
        return False
    access = hub.access(token)  # None unless a valid, unexpired invite of a room that did not kick its holder
    if access is None:
        return False
    value = request.match_info.get(parameter)
    return value == access.room if parameter == "room_id" else value in access.meshes


@web.middleware
async def require_token(request: web.Request, handler):
    path = request.path
    if not path.startswith("/api/") or path in PUBLIC_PATHS or request.method == "OPTIONS":
        return await handler(request)
    if bearer_token(request) is None:
        return error_response(401, "unauthorized", "send Authorization: Bearer <token>",
                              {"WWW-Authenticate": 'Bearer realm="theatrum"'})
    if not is_admin(request) and not invite_allows(request, bearer_token(request)):
        return error_response(403, "forbidden", "the token is not valid for this endpoint")
    return await handler(request)

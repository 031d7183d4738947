"""The socket.io endpoint: python-socketio's AsyncServer in aiohttp mode, and every handler it dispatches to.

A client connecting with ``auth: {token}`` equal to the admin token joins the ``admin`` room and receives
``job`` and ``pacs`` events (reconstruction and import progress). Any other token must be a room invite: the
session hub (server/services/hub.py) admits the socket to its room or refuses the connection, and handles its
``op``, ``pose`` and ``resume`` messages. docs/protocol.md is the protocol.
"""

from __future__ import annotations

import hmac

import socketio
from aiohttp import web

from server.config import Settings
from server.metrics import Metrics
from server.middleware.websockets import SOCKET_PATH
from server.services.hub import Hub

ADMIN_ROOM = "admin"


def socket_server(app: web.Application, settings: Settings) -> socketio.AsyncServer:
    """A python-socketio server mounted on `app` at /socket.io/ (handlers are added by `handle`)."""
    cors = list(settings.cors_origins) if settings.cors_origins else []
    # async_handlers=False: a socket's messages are handled in its reader, in order, without a task each
    # (thousands of poses a second); no handler waits on anything slow.
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins=cors, logger=False,
                               engineio_logger=False, max_http_buffer_size=1_000_000, async_handlers=False)
    sio.attach(app, socketio_path=SOCKET_PATH.strip("/"))
    return sio


def handle(sio: socketio.AsyncServer, hub: Hub, admin_token: str, metrics: Metrics) -> None:
    """Register every socket handler: connect, disconnect, op, pose and resume."""
    admin = admin_token.encode()

    async def connect(sid, environ, auth):
        token = (auth or {}).get("token") if isinstance(auth, dict) else None
        if isinstance(token, str) and hmac.compare_digest(token.encode("utf-8", "surrogatepass"), admin):
            await sio.enter_room(sid, ADMIN_ROOM)
        else:
            await hub.connect(sid, auth)  # refuses with ConnectionRefusedError
        metrics.sockets.inc()

    async def disconnect(sid, reason=None):
        metrics.sockets.dec()
        await hub.disconnect(sid, reason)

    sio.on("connect", connect)
    sio.on("disconnect", disconnect)
    sio.on("op", hub.on_op)
    sio.on("pose", hub.on_pose)
    sio.on("resume", hub.on_resume)

"""The socket.io endpoint: python-socketio's AsyncServer in aiohttp mode, mounted on the app.

A client connecting with ``auth: {token}`` equal to the admin token joins the ``admin`` room and receives
``job`` events (reconstruction progress). Any other token must be a room invite: the session hub
(server/hub.py) admits the socket to its room or refuses the connection, and handles its ``op``, ``pose``
and ``resume`` messages.
"""

from __future__ import annotations

import hmac
import logging

import socketio
from aiohttp import web

from .config import Settings

log = logging.getLogger("theatrum.sockets")
ADMIN_ROOM = "admin"


def attach_sockets(app: web.Application, settings: Settings) -> socketio.AsyncServer:
    cors = list(settings.cors_origins) if settings.cors_origins else []
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins=cors, logger=False,
                               engineio_logger=False, max_http_buffer_size=1_000_000)
    sio.attach(app, socketio_path="socket.io")
    metrics = app["metrics"]

    @sio.event
    async def connect(sid, environ, auth):
        token = (auth or {}).get("token") if isinstance(auth, dict) else None
        admin = app["admin_token"].encode()
        if isinstance(token, str) and hmac.compare_digest(token.encode("utf-8", "surrogatepass"), admin):
            await sio.enter_room(sid, ADMIN_ROOM)
        else:
            await app["hub"].connect(sid, auth)  # refuses with ConnectionRefusedError
        metrics.sockets.inc()

    @sio.event
    async def disconnect(sid, reason=None):
        metrics.sockets.dec()
        await app["hub"].disconnect(sid, reason)

    return sio

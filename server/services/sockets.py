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
from aiohttp import hdrs, web

from server.config import Settings

log = logging.getLogger("theatrum.sockets")
ADMIN_ROOM = "admin"


SOCKET_PATH = "/socket.io/"


@web.middleware
async def plain_websockets(request: web.Request, handler):
    """Serve socket.io's websockets without permessage-deflate: strip the offer, and aiohttp accepts none.

    A room's traffic is many small frames (events, 20 Hz pose frames of a few KB) to every member: deflating
    each copy for each socket costs the server CPU and every client latency, to save bandwidth that a
    headset's link does not miss. HTTP responses keep their gzip (server/compression.py).
    """
    if request.path.startswith(SOCKET_PATH) and hdrs.SEC_WEBSOCKET_EXTENSIONS in request.headers:
        headers = request.headers.copy()
        del headers[hdrs.SEC_WEBSOCKET_EXTENSIONS]
        request = request.clone(headers=headers)
    return await handler(request)


def attach_sockets(app: web.Application, settings: Settings) -> socketio.AsyncServer:
    cors = list(settings.cors_origins) if settings.cors_origins else []
    # async_handlers=False: a socket's messages are handled in its reader, in order, without a task each
    # (thousands of poses a second); no handler waits on anything slow.
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins=cors, logger=False,
                               engineio_logger=False, max_http_buffer_size=1_000_000, async_handlers=False)
    sio.attach(app, socketio_path=SOCKET_PATH.strip("/"))
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

"""socket.io's websockets without permessage-deflate.

A room's traffic is many small frames (events, 20 Hz pose frames of a few KB) to every member: deflating each
copy for each socket costs the server CPU and every client latency, to save bandwidth that a headset's link
does not miss. The middleware strips the client's offer, and aiohttp then accepts none. HTTP responses keep
their gzip (server/middleware/gzip.py).
"""

from __future__ import annotations

from aiohttp import hdrs, web

SOCKET_PATH = "/socket.io/"


@web.middleware
async def plain_websockets(request: web.Request, handler):
    """Drop the Sec-WebSocket-Extensions offer of a socket.io upgrade."""
    if request.path.startswith(SOCKET_PATH) and hdrs.SEC_WEBSOCKET_EXTENSIONS in request.headers:
        headers = request.headers.copy()
        del headers[hdrs.SEC_WEBSOCKET_EXTENSIONS]
        request = request.clone(headers=headers)
    return await handler(request)

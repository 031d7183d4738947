"""Fan-out: socket.io events put straight onto the outgoing queues of engine.io sockets, encoded once.

python-socketio's `emit` to many sockets starts one task per recipient; a room sends every event and every
20 Hz `poses` frame to all its members, so `Fanout.send` encodes the packet once and puts the same frame,
synchronously, on each recipient's engine.io queue. Every socket therefore receives a room's messages in the
order of the `send` calls (an op's event before its ack), and a broadcast costs one encode plus one queue put
per recipient. This is the one place that writes to sockets: a deployment that routes emits through a
message queue replaces this class, and nothing else.

A socket whose client stopped reading (it may still answer pings) would make its queue grow without bound:
past `max_queue_bytes` queued, the socket is closed instead.

It depends on python-engineio's socket internals (`Socket.queue`), which is why pyproject pins the version.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection
from typing import Any

import engineio.packet
import socketio
import socketio.packet

NAMESPACE = "/"


CHECK_FROM = 64  # frames queued on one socket before its queued bytes are counted


class Fanout:
    """Sends socket.io events of the default namespace to sockets of one python-socketio server."""

    def __init__(self, sio: socketio.AsyncServer, max_queue_bytes: int = 4 * 1024**2,
                 on_drop: Callable[[], object] = lambda: None):
        self.sio = sio
        self.max_queue_bytes = max_queue_bytes
        self.on_drop = on_drop
        self._closing: set[asyncio.Task] = set()

    def send(self, name: str, data: Any, to: str | Collection[str]) -> int:
        """Queue event `name` with `data` for one sid or several; returns how many sockets got it.

        A sid that is gone or closing is skipped. Requires JSON-encodable data without bytes.
        """
        sids = (to,) if isinstance(to, str) else to
        if not sids:
            return 0
        encoded = self.sio.packet_class(socketio.packet.EVENT, data=[name, data], binary=False).encode()
        frame = engineio.packet.Packet(engineio.packet.MESSAGE, encoded)
        eio_sid_of, sockets, queued = self.sio.manager.eio_sid_from_sid, self.sio.eio.sockets, 0
        for sid in sids:
            eio_sid = eio_sid_of(sid, NAMESPACE)
            socket = sockets.get(eio_sid)
            if socket is None or socket.closed or socket.closing:
                continue
            if socket.queue.qsize() >= CHECK_FROM and _queued_bytes(socket) > self.max_queue_bytes:
                self._drop_stalled(eio_sid, socket)
                continue
            socket.queue.put_nowait(frame)
            queued += 1
        return queued

    def _drop_stalled(self, eio_sid: str, socket) -> None:
        """Close a socket whose client does not read what it is sent: forget its queue, cut its connection (a
        writer blocked on a full TCP buffer never returns otherwise), and tell the hub (disconnect)."""
        self.on_drop()
        socket.queue._queue.clear()
        request = (self.sio.environ.get(eio_sid) or {}).get("aiohttp.request")
        if request is not None and request.transport is not None:
            request.transport.abort()
        task = asyncio.get_running_loop().create_task(
            socket.close(wait=False, abort=True, reason=self.sio.eio.reason.TRANSPORT_ERROR))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def is_connected(self, sid: str) -> bool:
        """Whether python-socketio has accepted socket `sid` into the namespace."""
        return self.sio.manager.is_connected(sid, NAMESPACE)

    async def disconnect(self, sid: str) -> None:
        """Disconnect socket `sid` (after what is already queued for it)."""
        await self.sio.disconnect(sid)

    async def close_all(self) -> None:
        """Close every engine.io connection at once: the server is stopping.

        Not eio.disconnect(): it waits for each socket's queue to drain, forever if its writer is gone. And a
        CLOSE packet alone leaves the websocket open (engine.io-client ignores it): the None stops the socket's
        writer, which closes the websocket.
        """
        for socket in list(self.sio.eio.sockets.values()):
            with contextlib.suppress(Exception):  # a socket already half closed: the None still stops it
                await socket.close(wait=False, reason=self.sio.eio.reason.SERVER_DISCONNECT)
                socket.queue.put_nowait(None)


def _queued_bytes(socket) -> int:
    """The bytes of the frames waiting on an engine.io socket's queue."""
    return sum(len(frame.data) for frame in list(socket.queue._queue) if frame is not None and frame.data)

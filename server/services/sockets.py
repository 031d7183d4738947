"""The socket.io endpoint: python-socketio's AsyncServer in aiohttp mode, and every handler it dispatches to.

A client connecting with ``auth: {token}`` equal to the admin token joins the ``admin`` room and receives
``job`` and ``pacs`` events (reconstruction and import progress). Any other token must be a room invite: the
session hub (server/services/hub.py) admits the socket to its room or refuses the connection, and handles its
``op``, ``pose`` and ``resume`` messages; server/services/signalling.py relays its WebRTC ``signal``s.
docs/protocol.md is the protocol.

Malformed input never costs more than a dropped connection and one log line: a packet that socket.io cannot
decode (truncated JSON, a 5,000-digit number, nesting 100,000 deep, a stray binary frame) or an Engine.IO
packet of an unknown type closes that connection, and `ClientErrors` writes at most one line per address a
minute. The libraries' own loggers are replaced by `QuietLogger`, which never writes a traceback for what a
client sent.
"""

from __future__ import annotations

import hmac
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import engineio
import engineio.exceptions
import engineio.packet
import socketio
import socketio.packet
from aiohttp import web

from server.config import Settings
from server.metrics import Metrics
from server.middleware.websockets import SOCKET_PATH
from server.services.client_errors import ClientErrors
from server.services.hub import Hub
from server.services.signalling import Signalling
from sessions.ledger.canonical import MAX_NESTING, too_deep
from sessions.limits import RateLimiter

ADMIN_ROOM = "admin"
log = logging.getLogger("theatrum.sockets")


class QuietLogger(logging.LoggerAdapter):
    """The logger given to python-socketio and python-engineio: their `exception(...)` calls (a handler that
    raised, a receive error) become one rate-limited line without a traceback; info and debug are dropped."""

    def __init__(self, logger: logging.Logger, limiter: RateLimiter, clock: Callable[[], float] = time.monotonic):
        super().__init__(logger, {})
        self._limiter = limiter
        self._clock = clock

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        error = sys.exc_info()[1]
        if self._limiter.allow(self._clock()):
            self.logger.error("%s: %s: %s", msg % args if args else msg, type(error).__name__, str(error)[:200])

    def info(self, *args: Any, **kwargs: Any) -> None:
        pass

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass


class _MalformedPacket(Exception):
    """socket.io could not decode what a client sent."""


class _Packet(socketio.packet.Packet):
    """A socket.io packet whose decoding failure is a `_MalformedPacket`, whatever the parser raised."""

    def decode(self, encoded_packet):
        if isinstance(encoded_packet, str | bytes) and too_deep(encoded_packet):
            raise _MalformedPacket(f"nested deeper than {MAX_NESTING} levels")
        try:
            return super().decode(encoded_packet)
        except (ValueError, TypeError, KeyError, IndexError, RecursionError, UnicodeError) as error:
            raise _MalformedPacket(f"{type(error).__name__}: {error}") from None


class _EngineServer(engineio.AsyncServer):
    """Engine.IO, closing a connection that sends a packet of an unknown type (instead of looping on it)."""

    async def _trigger_event(self, event, *args, **kwargs):
        if event == "connect":
            socket = self.sockets.get(args[0])
            if socket is not None:
                socket.receive = _strict(socket.receive, self, args[1])
        return await super()._trigger_event(event, *args, **kwargs)


def _strict(receive, server: _EngineServer, environ: dict):
    async def strict_receive(pkt):
        if not isinstance(pkt.packet_type, int) or not 0 <= pkt.packet_type < len(engineio.packet.packet_names):
            server.client_errors.record(_address(environ),
                                        f"Engine.IO packet of unknown type {pkt.packet_type!r}; dropped")
            raise engineio.exceptions.SocketIsClosedError()  # the receive loop ends and closes the connection
        await receive(pkt)

    return strict_receive


class GuardedServer(socketio.AsyncServer):
    """python-socketio's server; a packet it cannot decode drops the connection (see the module docstring)."""

    def __init__(self, client_errors: ClientErrors, **options: Any):
        super().__init__(serializer=_Packet, **options)
        self.client_errors = client_errors
        self.eio.client_errors = client_errors
        self.on_malformed: Callable[[str], None] | None = None  # told the sid of a member who sent it

    def _engineio_server_class(self):
        return _EngineServer

    async def _handle_eio_message(self, eio_sid, data):
        try:
            await super()._handle_eio_message(eio_sid, data)
        except (_MalformedPacket, ValueError) as error:  # ValueError: an unexpected or unknown socket.io packet
            self._binary_packet.pop(eio_sid, None)
            self.client_errors.record(_address(self.environ.get(eio_sid)), f"malformed socket input ({error}); dropped")
            sid = self.manager.sid_from_eio_sid(eio_sid, "/")
            if sid is not None and self.on_malformed is not None:
                self.on_malformed(sid)
            await self.eio.disconnect(eio_sid)


def _address(environ: dict | None) -> str:
    """The client's address as the connection saw it."""
    if not environ:
        return "?"
    request = environ.get("aiohttp.request")
    return (request.remote if request is not None else None) or environ.get("REMOTE_ADDR") or "?"


def socket_server(app: web.Application, settings: Settings) -> socketio.AsyncServer:
    """A python-socketio server mounted on `app` at /socket.io/ (handlers are added by `handle`)."""
    cors = list(settings.cors_origins) if settings.cors_origins else []
    quiet = QuietLogger(log, RateLimiter(10 / 60.0, 10))
    # async_handlers=False: a socket's messages are handled in its reader, in order, without a task each
    # (thousands of poses a second); no handler waits on anything slow.
    # With several processes, emits to the lobby (sio.emit) reach its sockets on every process through Redis;
    # a room's traffic never does (the Fanout writes to this process's sockets, which hold the whole room).
    manager = socketio.AsyncRedisManager(settings.redis_url, logger=quiet) if settings.redis_url else None
    sio = GuardedServer(ClientErrors(log), async_mode="aiohttp", cors_allowed_origins=cors, logger=quiet,
                        engineio_logger=quiet, max_http_buffer_size=1_000_000, async_handlers=False,
                        client_manager=manager)
    sio.attach(app, socketio_path=SOCKET_PATH.strip("/"))
    return sio


def handle(sio: socketio.AsyncServer, hub: Hub, admin_token: str, metrics: Metrics) -> None:
    """Register every socket handler: connect, disconnect, op, pose, resume and signal."""
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

    sio.on_malformed = hub.malformed
    sio.on("connect", connect)
    sio.on("disconnect", disconnect)
    sio.on("op", hub.on_op)
    sio.on("pose", hub.on_pose)
    sio.on("resume", hub.on_resume)
    sio.on("signal", Signalling(hub).on_signal)

"""A member cannot exhaust the server: the op rate is per participant (all their sockets together), a
participant holds at most a few sockets, a room's log grows by a bounded number of events a minute, and a
socket that stops reading is dropped once its queue passes a byte budget.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct

import pytest
import socketio
from hubtools import Lobby, RoomClient, until

from server.appkeys import METRICS


async def test_the_op_rate_is_per_participant_and_sockets_are_capped(aiohttp_server, tmp_path):
    lobby = await Lobby.open(aiohttp_server, tmp_path / "d", room_op_rate=5.0, room_op_burst=10.0)
    try:
        token = await lobby.token("student", "Many tabs")
        tabs = [await lobby.client("student", token=token) for _ in range(3)]
        with pytest.raises(socketio.exceptions.ConnectionError):
            await RoomClient(lobby.url, token).connect()  # a fourth socket of the same participant
        # 30 pointer ops at once over three sockets: the participant's burst (10) passes, not 3 x 10.
        acks = await asyncio.gather(*(tabs[n % 3].op("pointer.highlight", position=[0, 0, 0]) for n in range(30)))
        accepted = [a for a in acks if a["ok"]]
        assert 10 <= len(accepted) <= 11, len(accepted)
        assert all(a["error"]["code"] == "limit" for a in acks if not a["ok"])
        other = await lobby.client("student", "Someone else")  # another participant has a budget of their own
        assert (await other.op("pointer.highlight", position=[0, 0, 0]))["ok"]
    finally:
        await lobby.close()


async def test_a_rooms_log_grows_by_a_bounded_number_of_events_a_minute(aiohttp_server, tmp_path):
    lobby = await Lobby.open(aiohttp_server, tmp_path / "d", room_max_events_per_minute=40)
    try:
        clients = [await lobby.client("student", f"Student {n}") for n in range(4)]
        before = lobby.live.room.seq
        acks = await asyncio.gather(*(c.op("pointer.highlight", position=[0, 0, 0])
                                      for c in clients for _ in range(20)))
        refused = [a for a in acks if not a["ok"]]
        assert refused and all(a["error"]["code"] == "limit" and "events a minute" in a["error"]["detail"]
                               for a in refused)
        assert lobby.live.room.seq - before <= 40
        with pytest.raises(socketio.exceptions.ConnectionError):  # a new arrival is an event too
            await RoomClient(lobby.url, await lobby.token("student", "Late")).connect()
    finally:
        await lobby.close()


class StalledMember:
    """A room member over a bare TCP socket with a 4 KB receive buffer that never reads: it sends its socket.io
    CONNECT and then only Engine.IO pongs, blindly (what a broken or hostile client does)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, url: str, token: str) -> StalledMember:
        host, port = url.removeprefix("http://").split(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}\r\n"
                      f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        await reader.readuntil(b"\r\n\r\n")  # 101 Switching Protocols; from here on it reads nothing
        member = cls(reader, writer)
        member.send("40" + json.dumps({"token": token}))
        return member

    def send(self, text: str) -> None:
        """One masked text frame (RFC 6455 5.2), payload under 126 bytes or 16-bit length."""
        payload, mask = text.encode(), os.urandom(4)
        size = bytes([0x80 | len(payload)]) if len(payload) < 126 else b"\xfe" + struct.pack(">H", len(payload))
        self.writer.write(bytes([0x81]) + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def close(self) -> None:
        self.writer.transport.abort()


async def test_a_socket_that_stops_reading_is_dropped(aiohttp_server, tmp_path):
    lobby = await Lobby.open(aiohttp_server, tmp_path / "d", socket_max_queue_bytes=256 * 1024,
                             room_op_rate=10_000.0, room_op_burst=10_000.0, room_max_events_per_minute=100_000)
    try:
        surgeon = await lobby.client("surgeon", "Busy")
        stalled = await StalledMember.connect(lobby.url, await lobby.token("student", "Stalled"))
        await until(lambda: any(p.name == "Stalled" for p in lobby.live.room.present()), "the stalled join")
        (sid,) = [sid for sid, m in lobby.hub.members.items()
                  if lobby.live.room.participant(m.participant).name == "Stalled"]
        text = "x" * 3900
        for n in range(1900):  # up to 7.6 MB of events to every member
            await surgeon.op("annotation.create", type="note", text=text)
            if n % 200 == 0:
                stalled.send("3")  # "pong", blindly
            if sid not in lobby.hub.members:
                break
        await until(lambda: sid not in lobby.hub.members, "the stalled socket being dropped")
        assert lobby.app[METRICS].dropped_sockets._value.get() == 1
        assert n < 1000  # dropped once its queue passed 256 KB (and what the kernel buffers), not later
        assert not lobby.live.room.participant(lobby.hub.pseudonym_of(
            lobby.hub.invites.verify(surgeon.token))).kicked
        assert not surgeon.disconnected.is_set()  # the member that reads is unaffected
        stalled.close()
        await lobby.settle()
    finally:
        await lobby.close()

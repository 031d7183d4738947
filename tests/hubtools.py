"""Helpers for the hub tests: a seeded catalog, a running server, and a room client that keeps a replica.

`RoomClient` is what a real client does, in Python: it connects with an invite, applies the snapshot and then
each `event` whose seq is the next one (counting duplicates and gaps instead), verifies every event's hash, and
records `poses` frames, acks and refusals. Its `state` is a `RoomState` replica the tests compare with the
server's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import socketio

from server.app import build_app
from server.appkeys import ADMIN_TOKEN, ARTIFACTS, CATALOG, HUB
from server.config import Settings
from sessions.events import Event
from sessions.protocol import apply_event
from sessions.state import RoomState

STUDY = "st-test-study"
OTHER_STUDY = "st-other-study"
BONE, SKIN, FOREIGN = "m-test-bone", "m-test-skin", "m-other-bone"
GLB = b"glTF\x02\x00\x00\x00" + b"\x00" * 64  # only served back, never parsed


def settings(data: Path, **overrides: Any) -> Settings:
    """Test settings: no automatic pose tick (tests call hub.tick), fast limits unless overridden."""
    return Settings(data=data, workers=1, **{"pose_tick_hz": 0.0, **overrides})


def seed_catalog(app) -> None:
    """Two studies: STUDY with a bone and a skin mesh, OTHER_STUDY with one mesh, each with a GLB artifact."""
    catalog, store = app[CATALOG], app[ARTIFACTS]
    with catalog.transaction() as batch:
        for study in (STUDY, OTHER_STUDY):
            batch.add_study(study, "HEAD CT", "CT")
    digest = store.put_bytes(GLB, ".glb")
    for mesh_id, study, preset in ((BONE, STUDY, "bone"), (SKIN, STUDY, "skin"), (FOREIGN, OTHER_STUDY, "bone")):
        catalog.add_mesh({"id": mesh_id, "study_id": study, "series_id": "se-1", "preset": preset,
                          "threshold": 300.5, "triangles": 10, "vertices": 8,
                          "bbox_lps_mm": [[0, 0, 0], [1, 1, 1]], "artifacts": {"draco": digest}})


def admin(app) -> dict[str, str]:
    return {"Authorization": f"Bearer {app[ADMIN_TOKEN]}"}


async def start(aiohttp_server, data: Path, **overrides: Any):
    """A running server on a free loopback port with a seeded catalog: (server, app, base URL)."""
    app = build_app(settings(data, **overrides))
    seed_catalog(app)
    server = await aiohttp_server(app, shutdown_timeout=0.5)  # the python client closes slowly
    return server, app, str(server.make_url("")).rstrip("/")


async def create_room(http, app, mode: str = "consult", meshes=(BONE,), **body: Any) -> dict:
    """POST /api/rooms as the admin; the response body."""
    payload = {"study_id": STUDY, "mesh_ids": list(meshes), "mode": mode, "title": "Temporal bone", **body}
    response = await http.post("/api/rooms", json=payload, headers=admin(app))
    assert response.status == 201, await response.text()
    return await response.json()


async def mint(http, app, room_id: str, role: str, name: str) -> str:
    """A personal invite token (a new participant) of `role`."""
    response = await http.post(f"/api/rooms/{room_id}/invites", json={"role": role, "name": name},
                               headers=admin(app))
    assert response.status == 201, await response.text()
    return (await response.json())["token"]


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait until `predicate()` holds (polling), or fail naming `what`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class RoomClient:
    """A room participant over a real socket.io connection, with a replica of the room state."""

    def __init__(self, url: str, token: str):
        self.url = url
        self.token = token
        self.room: str | None = None
        self.state: RoomState | None = None
        self.seq = 0
        self.you: dict | None = None
        self.snapshots: list[dict] = []
        self.events: list[Event] = []  # every event applied, in order
        self.received: list[int] = []  # seq of every `event` message, as it arrived
        self.duplicates = 0
        self.gaps = 0
        self.poses: list[dict] = []
        self.arrivals: list[tuple[str, Any]] = []  # ("event", seq) and ("poses", frame), in order of arrival
        self.other: list[tuple[str, Any]] = []
        self.refusal: Any = None
        self.disconnected = asyncio.Event()
        self.sio: socketio.AsyncClient | None = None

    async def connect(self, **auth: Any) -> RoomClient:
        """Connect with the invite (plus `last_seq`, `replay`...). Raises socketio ConnectionError if refused."""
        self.sio = sio = socketio.AsyncClient(reconnection=False)
        self.disconnected = asyncio.Event()
        sio.on("snapshot", self._on_snapshot)
        sio.on("event", self._on_event)
        sio.on("poses", self._on_poses)
        sio.on("connect_error", self._on_refused)
        sio.on("disconnect", lambda *reason: self.disconnected.set())
        sio.on("*", lambda name, data: self.other.append((name, data)))
        await sio.connect(self.url, auth={"token": self.token, **auth}, transports=["websocket"],
                          wait_timeout=10)
        return self

    async def close(self) -> None:
        if self.sio is not None and self.sio.connected:
            await self.sio.disconnect()

    async def op(self, kind: str, **fields: Any) -> dict:
        """Emit an op and wait for its ack."""
        return await self.sio.call("op", {"kind": kind, **fields}, timeout=10)

    async def send(self, name: str, data: Any) -> None:
        await self.sio.emit(name, data)

    async def call(self, name: str, data: Any) -> Any:
        return await self.sio.call(name, data, timeout=120)

    async def wait_seq(self, seq: int, timeout: float = 10.0) -> None:
        await until(lambda: self.seq >= seq, f"seq {seq} (at {self.seq})", timeout)

    def _on_refused(self, data: Any = None) -> None:
        self.refusal = data

    def _on_snapshot(self, snapshot: dict) -> None:
        self.snapshots.append(snapshot)
        self.room = snapshot["room"]["id"]
        self.state = RoomState.from_snapshot(snapshot)
        self.seq = snapshot["seq"]
        self.you = snapshot["you"]

    def _on_poses(self, frame: dict) -> None:
        self.poses.append(frame)
        self.arrivals.append(("poses", frame))

    def _on_event(self, message: dict) -> None:
        event = Event.from_wire(self.room, message)  # checks the hash
        self.received.append(event.seq)
        self.arrivals.append(("event", event.seq))
        if event.seq <= self.seq:
            self.duplicates += 1
        elif event.seq > self.seq + 1:
            self.gaps += 1
        else:
            apply_event(self.state, event)
            self.seq = event.seq
            self.events.append(event)


class Lobby:
    """A running server with one room, an HTTP session, and the clients a test connected (closed at the end)."""

    def __init__(self, server, app, url: str, http, room: dict):
        self.server, self.app, self.url, self.http, self.created = server, app, url, http, room
        self.clients: list[RoomClient] = []

    @classmethod
    async def open(cls, aiohttp_server, data: Path, *, mode: str = "consult", **overrides: Any) -> Lobby:
        import aiohttp

        server, app, url = await start(aiohttp_server, data, **overrides)
        http = aiohttp.ClientSession(url)
        return cls(server, app, url, http, await create_room(http, app, mode))

    @property
    def id(self) -> str:
        return self.created["room"]["id"]

    @property
    def hub(self):
        return self.app[HUB]

    @property
    def live(self):
        return self.hub.rooms[self.id]

    async def token(self, role: str, name: str | None = None) -> str:
        return await mint(self.http, self.app, self.id, role, name or f"A {role}")

    async def client(self, role: str, name: str | None = None, *, token: str | None = None,
                     **auth: Any) -> RoomClient:
        """A connected client of a new participant (or of `token`) that has its snapshot or history."""
        client = RoomClient(self.url, token or await self.token(role, name))
        client.room = self.id
        self.clients.append(client)
        await client.connect(**auth)
        await until(lambda: client.poses, "the welcome (history and live avatars)")
        return client

    async def settle(self) -> None:
        """Wait until every connected client has every event of the room."""
        for client in self.clients:
            if client.sio is not None and client.sio.connected:
                await client.wait_seq(self.live.room.seq)

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        await self.http.close()

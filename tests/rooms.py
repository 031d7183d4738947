"""Helpers for the session-hub tests: a room with participants, in memory or on SQLite, and a clock."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sessions.limits import RoomLimits
from sessions.log import EventLog, LogStore, MemoryLogStore
from sessions.roles import Role
from sessions.room import Room, RoomInfo, RoomMode
from sessions.sqlite_log import SqliteLogStore

ROOM = "room-1"
STRUCTURE = "mesh-liver:1"  # the one structure of the room's meshes (a segmentation's segment 1)
T0 = 1_700_000_000_000  # ms since the epoch


class Clock:
    """Server time in ms that advances by one ms per reading."""

    def __init__(self, start: int = T0):
        self.now = start

    def __call__(self) -> int:
        self.now += 1
        return self.now


def new_room(people: dict[str, Role], *, store: LogStore | None = None, limits: RoomLimits | None = None,
             mode: RoomMode = RoomMode.TRAINING, clock: Clock | None = None) -> Room:
    """A room (id ROOM) in which each pid of `people` has joined with its role, in order."""
    clock = clock or Clock()
    log = EventLog(store or MemoryLogStore(), ROOM)
    structures = ({"id": STRUCTURE, "mesh": "mesh-liver", "name": "Liver", "color": "#dd8265", "volume_ml": 70.4},)
    info = RoomInfo(ROOM, mode, "Temporal bone", "study-1", ("mesh-bone", "mesh-skin", "mesh-liver"), structures)
    room = Room.create(info, log, clock(), limits)
    for pid, role in people.items():
        room.join(pid, f"Name of {pid}", role, clock())
    return room


def sqlite_store(directory: Path) -> SqliteLogStore:
    """A SQLite log store in `directory` (NORMAL durability keeps the tests fast)."""
    return SqliteLogStore(directory / "rooms.sqlite", synchronous="NORMAL")


def point(x: float = 1.0, label: str = "") -> dict:
    """An annotation.create op for a point."""
    op = {"kind": "annotation.create", "type": "point", "position": [x, 2.0, 3.0]}
    return {**op, "label": label} if label else op


def rfc6962_root(leaves: list[bytes]) -> bytes:
    """The RFC 6962 Merkle Tree Hash of leaf bytes, written out recursively (an independent reference)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + rfc6962_root(leaves[:split]) + rfc6962_root(leaves[split:])).digest()


def fill(room: Room, clock: Clock, count: int) -> None:
    """`count` mixed ops by participants "ines" (instructor), "sam" (surgeon) and "stu" (student)."""
    for i in range(count):
        created = room.apply(point(float(i), label=f"p{i}"), "stu", clock())
        if i % 3 == 0:
            room.apply({"kind": "model.transform", "position": [0, 1, i / 100]}, "sam", clock())
        if i % 7 == 0:
            room.apply({"kind": "annotation.update", "id": created.data["id"], "label": "seen"}, "ines", clock())

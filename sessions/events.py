"""Events: what happened in a room, in its one total order, each one a leaf of the room's Merkle log.

An Event is an accepted op (or a server happening: room.open/close, participant.join/leave, the provenance of
the meshes a room shows, structure.add/fail) stamped by the server with the room's next `seq`, the server time
`at` (ms since the Unix epoch) and the `author`'s pseudonym. Its leaf bytes are
`sessions.ledger.canonical.encode_event` of {room, seq, at, author, kind, data}; `hash` is the RFC 6962 leaf hash
of those bytes, in hex.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sessions.ledger.canonical import decode_event, encode_event
from sessions.ledger.merkle import leaf_hash

SERVER = "server"  # the author of events no participant made


class ServerKind(StrEnum):
    """Event kinds that only the server produces (clients send the kinds in sessions.ops.OpKind)."""

    ROOM_OPEN = "room.open"
    ROOM_CLOSE = "room.close"
    PARTICIPANT_JOIN = "participant.join"
    PARTICIPANT_LEAVE = "participant.leave"
    MESH_PROVENANCE = "mesh.provenance"
    STRUCTURE_ADD = "structure.add"  # a structure grown from a seed is ready (its mesh)
    STRUCTURE_FAIL = "structure.fail"  # a structure could not be grown (the reason)


class EventError(ValueError):
    """An event (or its wire form) is malformed or does not match its hash."""


@dataclass(frozen=True)
class Event:
    """One entry of a room's log. `data` is exactly what the leaf bytes hold; do not mutate it."""

    room: str
    seq: int
    at: int
    author: str
    kind: str
    data: dict[str, Any]
    hash: str

    @classmethod
    def create(cls, room: str, seq: int, at: int, author: str, kind: str, data: Mapping[str, Any]) -> Event:
        """Stamp a new event and compute its leaf hash. Requires canonically encodable `data`."""
        leaf = encode_event({"room": room, "seq": seq, "at": at, "author": author, "kind": kind,
                             "data": dict(data)})
        # The leaf was just encoded canonically, so a plain parse gives back exactly its content (a copy).
        return cls._with_leaf(json.loads(leaf), leaf)

    @classmethod
    def from_leaf(cls, leaf: bytes) -> Event:
        """The event whose leaf bytes are `leaf`. Requires a canonical encoding (else CanonicalError)."""
        return cls._with_leaf(decode_event(leaf), leaf)

    @classmethod
    def _with_leaf(cls, fields: dict[str, Any], leaf: bytes) -> Event:
        """The event of decoded `fields`, remembering its `leaf` bytes. Requires fields == decode(leaf)."""
        event = cls(hash=leaf_hash(leaf).hex(), **fields)
        object.__setattr__(event, "_leaf", leaf)
        return event

    def leaf(self) -> bytes:
        """The canonical leaf bytes of this event (the Merkle leaf is SHA-256(0x00 || these))."""
        cached = self.__dict__.get("_leaf")
        if cached is not None:
            return cached
        return encode_event({
            "room": self.room, "seq": self.seq, "at": self.at,
            "author": self.author, "kind": self.kind, "data": self.data,
        })

    def to_wire(self) -> dict[str, Any]:
        """The `event` message broadcast to the room: {seq, hash, at, author, kind, data}."""
        return {
            "seq": self.seq, "hash": self.hash, "at": self.at,
            "author": self.author, "kind": self.kind, "data": self.data,
        }

    @classmethod
    def from_wire(cls, room: str, message: Mapping[str, Any]) -> Event:
        """The event of a received `event` message, checked against its hash. Requires the room id."""
        try:
            event = cls.create(room, message["seq"], message["at"], message["author"], message["kind"],
                               message["data"])
        except (KeyError, TypeError, ValueError) as error:
            raise EventError(f"malformed event message: {error}") from error
        if event.hash != message.get("hash"):
            raise EventError(f"event {event.seq}: hash {message.get('hash')!r} does not match {event.hash}")
        return event

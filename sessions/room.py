"""A room: the authority that turns ops into events, in one total order, durably.

`Room.apply(message, participant, at)` validates the op (schema, bounds), checks the sender's permission
(sessions.protocol), checks it against the state (exists, version, limits), gives it the room's next seq, builds
the Event, appends it to the log (committed) and applies it to the state; then it returns the event, which
the server acks and broadcasts. Any refusal is an OpError and changes nothing.

Joins and leaves are events too (authored by "server"). Participant ids are pseudonyms chosen by the server
(e.g. a keyed hash of the invite); the room never sees a token. A returning participant keeps the role the
log gave them (a promotion or demotion outlives a reconnect), and a kicked participant cannot rejoin.

Times: `at` is the server's wall clock in ms since the Unix epoch. The room never lets `at` go backwards
(it uses the previous event's time if the clock steps back), so replays keep their order in time.

A Room is not thread-safe: call it from one thread (the event loop), or serialise calls per room.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sessions import seats
from sessions.events import SERVER, Event, ServerKind
from sessions.limits import RoomLimits
from sessions.log import EventLog, LogCorruptError, LogError
from sessions.ops import ErrorCode, OpError, OpKind, identifier, invalid, text
from sessions.protocol import apply_event, may, parse_op, prepare
from sessions.roles import Role
from sessions.state import Participant, RoomState, StateError

__all__ = ["MAX_TITLE_LENGTH", "Room", "RoomInfo", "RoomLimits", "RoomMode"]

MAX_TITLE_LENGTH = 200  # characters of a room's title


class RoomMode(StrEnum):
    """A consult (a remote colleague on a real case) or a training room (de-identified data only)."""

    CONSULT = "consult"
    TRAINING = "training"


@dataclass(frozen=True)
class RoomInfo:
    """What a room is about: recorded by its first event (room.open). Ids are pseudonymous."""

    id: str
    mode: RoomMode
    title: str = ""
    study: str = ""
    meshes: tuple[str, ...] = ()
    structures: tuple[Mapping[str, Any], ...] = ()  # {id, mesh, name, color, volume_ml} of its meshes' structures

    def __post_init__(self) -> None:
        identifier(self.id, "room id")
        object.__setattr__(self, "mode", RoomMode(self.mode))
        text(self.title, "title", MAX_TITLE_LENGTH)
        if self.study:
            identifier(self.study, "study")
        object.__setattr__(self, "meshes", tuple(identifier(m, "mesh") for m in self.meshes))
        for structure in self.structures:
            identifier(structure["id"], "structure")

    def to_json(self) -> dict[str, Any]:
        """The room.open event data (the id is the event's room); `structures` only when there are some."""
        data = {"mode": self.mode.value, "title": self.title, "study": self.study, "meshes": list(self.meshes)}
        if self.structures:
            data["structures"] = [dict(s) for s in self.structures]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoomInfo:
        """The info of a state's `room` dict. Requires {id, mode, title, study, meshes}."""
        return cls(data["id"], RoomMode(data["mode"]), data["title"], data["study"], tuple(data["meshes"]))


class Room:
    """One room: its state, its log, its limits. Make one with `Room.create` or `Room.open`."""

    def __init__(self, log: EventLog, state: RoomState, limits: RoomLimits, last_at: int):
        """Requires `state` to be the replay of `log`; use `create` or `open`."""
        self.log = log
        self.state = state
        self.limits = limits
        self._last_at = last_at
        # False: each event is committed before the call returns. True: events are staged in the log's open
        # transaction and applied to the state; the caller commits (`log.commit()`, several events at once) and,
        # if the commit fails, reopens the room from its log (the state holds what was not committed).
        self.deferred = False

    @classmethod
    def create(cls, info: RoomInfo, log: EventLog, at: int, limits: RoomLimits | None = None) -> Room:
        """A new room whose first event is room.open. Requires an empty log for `info.id`."""
        if log.room != info.id or log.size != 0:
            raise LogError(f"room {info.id} needs an empty log of its own "
                           f"(got the log of {log.room!r} with {log.size} events)")
        room = cls(log, RoomState(), limits or RoomLimits(), 0)
        room._append(SERVER, ServerKind.ROOM_OPEN, info.to_json(), at)
        return room

    @classmethod
    def open(cls, log: EventLog, limits: RoomLimits | None = None) -> Room:
        """The room rebuilt by replaying its log (after a restart). Requires a log starting with room.open."""
        state, last_at = RoomState(), 0
        for event in log.verified_events():
            if event.seq == 1 and event.kind != ServerKind.ROOM_OPEN:
                raise LogCorruptError(f"room {log.room}: the log starts with {event.kind}, not room.open")
            try:
                apply_event(state, event)
            except StateError as error:
                raise LogCorruptError(f"room {log.room}: {error}") from error
            last_at = event.at
        if state.seq == 0:
            raise LogError(f"room {log.room} has no events")
        return cls(log, state, limits or RoomLimits(), last_at)

    # ---- what the room is --------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The room id (pseudonymous)."""
        return self.log.room

    @property
    def info(self) -> RoomInfo:
        """What the room is about."""
        return RoomInfo.from_json(self.state.room)

    @property
    def mode(self) -> RoomMode:
        """Consult or training."""
        return RoomMode(self.state.room["mode"])

    @property
    def seq(self) -> int:
        """The seq of the last event."""
        return self.state.seq

    @property
    def head(self) -> str:
        """The Merkle root of the log, hex."""
        return self.log.head

    @property
    def closed(self) -> bool:
        """True once room.close is logged."""
        return self.state.closed

    def participant(self, participant_id: str) -> Participant | None:
        """The participant `participant_id` (present or not), or None."""
        return self.state.participant(participant_id)

    def present(self) -> list[Participant]:
        """Participants in the room now, in join order."""
        return self.state.present()

    # ---- presence ----------------------------------------------------------------------------------

    def join(self, participant_id: str, name: str, role: Role, at: int) -> Event | None:
        """Log the participant's arrival; None if already present. Requires a pseudonym, a name, the invite's role.

        A known participant keeps the role the log gave them, not the invite's. Refuses (OpError) a closed
        room, a kicked participant, a new participant while the room is locked against joins, and a full room.
        """
        identifier(participant_id, "participant")
        if participant_id == SERVER:
            raise invalid(f"{SERVER!r} is not a participant id")
        name = text(name, "name", self.limits.max_name_length).strip()
        if not name:
            raise invalid("a display name is required")
        self._check_open()
        known = self.state.participant(participant_id)
        if known is not None and known.kicked:
            raise OpError(ErrorCode.FORBIDDEN, "you were removed from this room")
        if known is not None and known.present:
            return None
        if known is None and self.state.joins_locked:
            raise OpError(ErrorCode.FORBIDDEN, "the instructor has locked the room against new joins")
        if len(self.state.present()) >= self.limits.max_participants:
            raise OpError(ErrorCode.LIMIT, f"the room is full ({self.limits.max_participants} participants)")
        role = known.role if known is not None else Role(role)
        seat = self.state.seat_for(participant_id)
        data = {"participant": participant_id, "name": name, "role": role.value, "seat": seats.seat(seat).to_json()}
        return self._append(SERVER, ServerKind.PARTICIPANT_JOIN, data, at)

    def leave(self, participant_id: str, at: int, reason: str = "left") -> Event | None:
        """Log the participant's departure; None if they are not present (already left, kicked, or the room closed).

        Requires `reason` to be a short word such as "left", "disconnected" or "timeout".
        """
        participant = self.state.participant(participant_id)
        if participant is None or not participant.present or self.closed:
            return None
        data = {"participant": participant_id, "reason": text(reason, "reason", 64)}
        return self._append(SERVER, ServerKind.PARTICIPANT_LEAVE, data, at)

    def record_provenance(self, data: Mapping[str, Any], at: int) -> Event:
        """Log mesh.provenance: where meshes the room shows came from (at room.open, and for every mesh added
        later). Requires an open room and canonically encodable `data`; the server makes it."""
        self._check_open()
        return self._append(SERVER, ServerKind.MESH_PROVENANCE, data, at)

    def close(self, at: int) -> Event:
        """Log room.close: everyone leaves and later ops and joins are refused. Requires an open room."""
        self._check_open()
        return self._append(SERVER, ServerKind.ROOM_CLOSE, {}, at)

    # ---- ops ---------------------------------------------------------------------------------------

    def apply(self, message: Any, participant_id: str, at: int) -> Event:
        """The event of client op `message` from participant `participant_id`, durably logged and applied.

        Requires nothing of `message` (it is untrusted); raises OpError and changes nothing on refusal.
        """
        participant = self._sender(participant_id)
        op = parse_op(message, self.limits)
        reason = may(participant.role, op.kind, own=self._owns(participant_id, op.kind, op.data),
                     locked=self.state.locked, muted=participant.muted)
        if reason is not None:
            raise OpError(ErrorCode.FORBIDDEN, reason)
        data = prepare(self.state, op, participant_id, self.seq + 1, self.limits)
        return self._append(participant_id, op.kind, data, at)

    def record(self, kind: ServerKind, data: Mapping[str, Any], at: int) -> Event:
        """Log a server event of the structures (structure.add, structure.fail). Requires an open room and data
        made by the server."""
        if kind not in (ServerKind.STRUCTURE_ADD, ServerKind.STRUCTURE_FAIL):
            raise ValueError(f"{kind} is not recorded this way")
        self._check_open()
        return self._append(SERVER, kind, data, at)

    def _sender(self, participant_id: str) -> Participant:
        """The present participant `participant_id`, or a forbidden OpError."""
        self._check_open()
        participant = self.state.participant(participant_id)
        if participant is not None and participant.kicked:
            raise OpError(ErrorCode.FORBIDDEN, "you were removed from this room")
        if participant is None or not participant.present:
            raise OpError(ErrorCode.FORBIDDEN, "you are not in this room")
        return participant

    def _owns(self, participant_id: str, kind: OpKind, data: Mapping[str, Any]) -> bool:
        """False only if the op edits an existing annotation someone else made. Requires a parsed op."""
        if kind not in (OpKind.ANNOTATION_UPDATE, OpKind.ANNOTATION_DELETE):
            return True
        annotation = self.state.annotations.get(data["id"])
        return annotation is None or annotation.author == participant_id

    def _check_open(self) -> None:
        """Refuse anything on a closed room."""
        if self.state.closed:
            raise OpError(ErrorCode.FORBIDDEN, "the room is closed")

    def _append(self, author: str, kind: str, data: Mapping[str, Any], at: int) -> Event:
        """Stamp, log (durably, or staged when `deferred`) and apply the next event. Requires data already
        checked."""
        if isinstance(at, bool) or not isinstance(at, int) or at < 0:
            raise ValueError(f"at must be a non-negative int of ms since the epoch, got {at!r}")
        at = max(at, self._last_at)
        event = Event.create(self.id, self.seq + 1, at, author, str(kind), data)
        if self.deferred:
            self.log.stage(event)
        else:
            self.log.append(event)
        apply_event(self.state, event)
        self._last_at = at
        return event

    # ---- reading -----------------------------------------------------------------------------------

    def snapshot_for(self, participant_id: str) -> dict[str, Any]:
        """The `snapshot` message for `participant_id`: {room, you, participants, state, seq, head}."""
        participant = self.state.participant(participant_id)
        return {
            **self.state.snapshot(),
            "you": participant.to_json() if participant is not None else None,
            "head": self.head,
        }

    def events_since(self, seq: int, until: int | None = None) -> list[Event]:
        """Events with seq < event.seq <= until (until None: the last). Requires 0 <= seq."""
        if seq < 0:
            raise ValueError(f"seq must be >= 0, got {seq}")
        return list(self.log.events(seq, until))

    def catch_up(self, last_seq: int) -> list[Event] | None:
        """The events a client holding up to `last_seq` missed, or None if it needs a fresh snapshot.

        A negative or future `last_seq` (the client is confused) also gets None, and so
        does a client more than `limits.max_resume_events` behind.
        """
        if isinstance(last_seq, bool) or not isinstance(last_seq, int) or not 0 <= last_seq <= self.seq:
            return None
        if self.seq - last_seq > self.limits.max_resume_events:
            return None
        return self.events_since(last_seq)

"""Replay: a closed room played back, read-only, to one socket at the speed it asked for.

A socket that connects with `auth.replay = {from?, speed?, max_gap?}` gets the room's snapshot after event
`from`, then the events after it on their recorded schedule (silences capped at `max_gap` seconds) merged with
the avatars' recorded ~2 Hz track, then `replay.end`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from server.services.fanout import Fanout
from sessions.events import ServerKind
from sessions.ops import ErrorCode, OpError
from sessions.replay import TrackPoint, schedule, state_at
from sessions.room import Room

MAX_REPLAY_SPEED = 100.0
MAX_GAP_SECONDS = 3600.0


@dataclass(frozen=True)
class Replay:
    """A read-only replay request: start after event `start`, play at `speed`, cap silences at `max_gap` s."""

    start: int
    speed: float
    max_gap: float


def replay_request(room: Room, participant_id: str, request: Any) -> Replay:
    """The checked replay request of a connecting socket. Raises OpError (forbidden or invalid)."""
    if not room.closed:
        raise OpError(ErrorCode.FORBIDDEN, "only a closed room can be replayed")
    participant = room.participant(participant_id)
    if participant is not None and participant.kicked:
        raise OpError(ErrorCode.FORBIDDEN, "you were removed from this room")
    if not isinstance(request, Mapping) or set(request) - {"from", "speed", "max_gap"}:
        raise OpError(ErrorCode.INVALID, "replay must be {from?, speed?, max_gap?}")
    start, speed, max_gap = request.get("from", 1), request.get("speed", 1.0), request.get("max_gap", 5.0)
    if isinstance(start, bool) or not isinstance(start, int) or not 1 <= start <= room.seq:
        raise OpError(ErrorCode.INVALID, f"replay.from must be a seq in [1, {room.seq}]")
    for value, name, high in ((speed, "speed", MAX_REPLAY_SPEED), (max_gap, "max_gap", MAX_GAP_SECONDS)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or not 0 <= value <= high or (name == "speed" and value < 0.1):
            raise OpError(ErrorCode.INVALID, f"replay.{name} is out of range")
    return Replay(start, float(speed), float(max_gap))


async def play(room: Room, participant_id: str, sid: str, request: Replay, fanout: Fanout,
               track: Callable[[int], list[TrackPoint]]) -> None:
    """Play `room` back to socket `sid`. Requires a closed room and a checked request; `track(since_ms)` gives
    the recorded avatar track from server time `since_ms`."""
    events = room.events_since(0)
    state = state_at(events, request.start)
    participant = state.participant(participant_id)
    snapshot = {**state.snapshot(), "you": participant.to_json() if participant else None,
                "head": room.log.root(request.start).hex(),
                "replay": {"speed": request.speed, "max_gap": request.max_gap, "last": room.seq}}
    fanout.send("snapshot", snapshot, sid)
    played = events[request.start - 1:]  # from the snapshot's event: the clock starts there, it is not sent
    for delay, item in schedule(played, request.speed, max_gap=request.max_gap, track=track(played[0].at)):
        if delay > 0:
            await asyncio.sleep(delay)
        if isinstance(item, TrackPoint):
            fanout.send("poses", {"poses": {item.participant: item.pose}, "gone": []}, sid)
        elif item.seq > request.start:
            fanout.send("event", item.to_wire(), sid)
            if item.kind == ServerKind.PARTICIPANT_LEAVE:
                fanout.send("poses", {"poses": {}, "gone": [item.data["participant"]]}, sid)
    fanout.send("replay.end", {"seq": room.seq}, sid)

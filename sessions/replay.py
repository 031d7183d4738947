"""Replay of a closed room, for training review: when to play each event, and the state at any seq.

`schedule(events, speed)` yields (delay, event): wait `delay` seconds, then play `event`. Delays follow the
events' server times `at`, divided by `speed` (1.0 is real time, 4.0 four times faster); `max_gap` caps
long silences so a review does not sit through a coffee break. The server owns the sleeping.

`schedule` also takes the room's recorded avatar track (`TrackPoint`s, ~2 Hz per participant, not part of the
log): they are merged in by time, so heads and hands move between the events as they did in the room.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sessions.events import Event
from sessions.protocol import apply_event
from sessions.state import RoomState


@dataclass(frozen=True)
class TrackPoint:
    """One recorded pose of one participant at server time `at` (ms since the epoch): {head, left?, right?}."""

    at: int
    participant: str
    pose: dict[str, Any]


def schedule(events: Iterable[Event], speed: float = 1.0, *, max_gap: float | None = None,
             track: Iterable[TrackPoint] = ()) -> Iterator[tuple[float, Event | TrackPoint]]:
    """(seconds to wait, item) for each event and track point, in time order, the first at 0.

    Requires events in seq order, track points in time order, speed > 0. An event and a point at the same
    time: the event first. Points before the first event are dropped (they belong to the part skipped).
    """
    if not speed > 0:
        raise ValueError(f"speed must be positive, got {speed}")
    if max_gap is not None and max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    previous_at: int | None = None
    for _, item in heapq.merge(_keyed_events(events), (((p.at, 1), p) for p in track), key=itemgetter(0)):
        if previous_at is None and isinstance(item, TrackPoint):
            continue
        delay = 0.0 if previous_at is None else max(0, item.at - previous_at) / 1000.0 / speed
        if max_gap is not None:
            delay = min(delay, max_gap)
        yield delay, item
        previous_at = item.at


def _keyed_events(events: Iterable[Event]) -> Iterator[tuple[tuple[int, int], Event]]:
    """((at, 0), event) in seq order, refusing any other order."""
    previous: Event | None = None
    for event in events:
        if previous is not None and event.seq <= previous.seq:
            raise ValueError(f"event {event.seq} follows event {previous.seq}: not in seq order")
        yield (event.at, 0), event
        previous = event


def state_at(events: Iterable[Event], seq: int) -> RoomState:
    """The room state after event `seq` (seek). Requires the room's events from seq 1, in order."""
    state = RoomState()
    for event in events:
        if event.seq > seq:
            break
        apply_event(state, event)
    return state

"""Replay of a closed room, for training review: when to play each event, and the state at any seq.

`schedule(events, speed)` yields (delay, event): wait `delay` seconds, then play `event`. Delays follow the
events' server times `at`, divided by `speed` (1.0 is real time, 4.0 four times faster); `max_gap` caps
long silences so a review does not sit through a coffee break. The server owns the sleeping.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sessions.events import Event
from sessions.state import RoomState


def schedule(events: Iterable[Event], speed: float = 1.0, *, max_gap: float | None = None
             ) -> Iterator[tuple[float, Event]]:
    """(seconds to wait, event) for each event, the first at 0. Requires events in seq order, speed > 0."""
    if not speed > 0:
        raise ValueError(f"speed must be positive, got {speed}")
    if max_gap is not None and max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    previous: Event | None = None
    for event in events:
        if previous is not None and event.seq <= previous.seq:
            raise ValueError(f"event {event.seq} follows event {previous.seq}: not in seq order")
        delay = 0.0 if previous is None else max(0, event.at - previous.at) / 1000.0 / speed
        if max_gap is not None:
            delay = min(delay, max_gap)
        yield delay, event
        previous = event


def state_at(events: Iterable[Event], seq: int) -> RoomState:
    """The room state after event `seq` (seek). Requires the room's events from seq 1, in order."""
    state = RoomState()
    for event in events:
        if event.seq > seq:
            break
        state.apply(event)
    return state

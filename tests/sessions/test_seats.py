"""Seats around the table: distinct for everyone present, stable when people come back, tiers when a ring fills,
the same after a restart (they are in the log)."""

import dataclasses
import math

import pytest

from sessions import seats
from sessions.protocol import apply_event
from sessions.roles import Role
from sessions.state import RoomState
from tests.sessions.test_room import new_room

# (index, tier, angle): the front seat, then outward to either side in turn; odd tiers turned by half a step.
SEATS = [
    (0, 0, 0.0), (1, 0, 60.0), (2, 0, -60.0), (3, 0, 120.0), (4, 0, -120.0), (5, 0, -180.0),
    (6, 1, 15.0), (7, 1, 45.0), (8, 1, -15.0), (9, 1, 75.0), (17, 1, -165.0),
    (18, 2, 0.0), (19, 2, 20.0), (20, 2, -20.0), (36, 3, 7.5),
]


@pytest.mark.parametrize(("index", "tier", "angle"), SEATS)
def test_seat_geometry(index, tier, angle):
    assert seats.seat(index) == seats.Seat(index, tier, angle)


def test_every_tier_is_a_full_ring_of_distinct_angles():
    index = 0
    for tier in range(5):
        angles = [seats.seat(index + k).angle for k in range(seats.tier_size(tier))]
        assert len(set(angles)) == len(angles) == seats.SEATS_PER_TIER * (tier + 1)
        gaps = sorted(a % 360 for a in angles)
        steps = {round(b - a, 6) for a, b in zip(gaps, [*gaps[1:], gaps[0] + 360], strict=True)}
        assert steps == {round(360 / len(angles), 6)}, f"tier {tier} is not an even ring"
        assert {seats.seat(index + k).tier for k in range(len(angles))} == {tier}
        index += len(angles)


def test_a_negative_index_is_refused():
    with pytest.raises(ValueError, match="seat index"):
        seats.seat(-1)


@pytest.mark.parametrize(("previous", "taken", "expected"), [
    (None, set(), 0), (None, {0, 1, 3}, 2), (4, {0, 1}, 4), (1, {0, 1}, 2), (None, set(range(40)), 40),
])
def test_assign(previous, taken, expected):
    assert seats.assign(previous, taken) == expected


def seat_of(room, pid):
    return room.snapshot_for(pid)["you"]["seat"]["index"]


def test_people_present_never_share_a_seat_and_a_returning_person_keeps_theirs():
    room = new_room({})
    for k in range(8):
        room.join(f"p{k}", f"Person {k}", Role.STUDENT, k)
    assert [seat_of(room, f"p{k}") for k in range(8)] == list(range(8))
    room.leave("p2", 10)
    room.leave("p5", 11)
    room.join("late", "Late", Role.STUDENT, 12)  # takes the lowest free seat: p2's
    assert seat_of(room, "late") == 2
    room.join("p5", "Person 5", Role.STUDENT, 13)  # nobody took 5: back in the same place
    assert seat_of(room, "p5") == 5
    room.join("p2", "Person 2", Role.STUDENT, 14)  # 2 is held now: the lowest free one
    assert seat_of(room, "p2") == 8
    present = [p for p in room.present()]
    assert len({p.seat for p in present}) == len(present) == 9


def test_seats_are_in_the_log_so_a_replayed_state_has_the_same_ones():
    room = new_room({})
    for k in range(5):
        room.join(f"p{k}", f"Person {k}", Role.STUDENT, k)
    room.leave("p1", 6)
    room.join("q", "Q", Role.STUDENT, 7)
    replayed = RoomState()
    for event in room.events_since(0):
        apply_event(replayed, event)
    assert replayed.snapshot()["participants"] == room.state.snapshot()["participants"]
    joins = [e for e in room.events_since(0) if e.kind == "participant.join"]
    assert [e.data["seat"]["index"] for e in joins] == [0, 1, 2, 3, 4, 1]


def test_a_log_from_before_seats_gets_them_in_join_order():
    state = RoomState()
    room = new_room({})
    room.join("a", "A", Role.STUDENT, 1)
    room.join("b", "B", Role.STUDENT, 2)
    for event in room.events_since(0):
        if event.kind == "participant.join":
            data = {k: v for k, v in event.data.items() if k != "seat"}
            event = dataclasses.replace(event, data=data)
        apply_event(state, event)
    assert [p.seat for p in state.participants.values()] == [0, 1]


def test_two_neighbours_on_the_inner_ring_stand_more_than_half_a_metre_apart():
    """The client puts tier 0 at 0.6 m from the table's centre (docs/protocol.md): 60 degrees apart is 0.6 m."""
    a, b = (math.radians(seats.seat(k).angle) for k in (0, 1))
    assert 2 * 0.6 * math.sin(abs(a - b) / 2) > 0.5

"""Room: op validation, presence, moderation effects, limits, catch-up, and the per-client rate limits."""

from __future__ import annotations

import json

import pytest
from rooms import ROOM, Clock, new_room, point

from sessions.events import SERVER
from sessions.limits import RateLimiter, RoomLimits, ViolationCounter, op_rate_limiter
from sessions.ops import ErrorCode, OpError
from sessions.roles import Role
from sessions.room import RoomInfo, RoomMode
from sessions.state import RoomState

PEOPLE = {"ines": Role.INSTRUCTOR, "sam": Role.SURGEON, "stu": Role.STUDENT, "obi": Role.OBSERVER}
NAN, INF = float("nan"), float("inf")


# ---- schema and bounds: every message below is refused, with this code --------------------------------

INVALID_OPS = [
    ("not an object", ["annotation.create"], ErrorCode.INVALID),
    ("unknown kind", {"kind": "annotation.paint"}, ErrorCode.INVALID),
    ("no kind", {"type": "point", "position": [0, 0, 0]}, ErrorCode.INVALID),
    ("client author", {**point(), "author": "ines"}, ErrorCode.INVALID),
    ("client seq", {**point(), "seq": 1}, ErrorCode.INVALID),
    ("client time", {**point(), "at": 5}, ErrorCode.INVALID),
    ("client layer", {**point(), "layer": "ines"}, ErrorCode.INVALID),
    ("client role", {**point(), "role": "instructor"}, ErrorCode.INVALID),
    ("unknown field", {**point(), "colour": "#ff0000"}, ErrorCode.INVALID),
    ("unknown type", {"kind": "annotation.create", "type": "arrow"}, ErrorCode.INVALID),
    ("missing position", {"kind": "annotation.create", "type": "point"}, ErrorCode.INVALID),
    ("NaN", {"kind": "annotation.create", "type": "point", "position": [NAN, 0, 0]}, ErrorCode.INVALID),
    ("infinity", {"kind": "annotation.create", "type": "point", "position": [0, INF, 0]}, ErrorCode.INVALID),
    ("bool as number", {"kind": "annotation.create", "type": "point", "position": [True, 0, 0]},
     ErrorCode.INVALID),
    ("string as number", {"kind": "annotation.create", "type": "point", "position": ["1", 0, 0]},
     ErrorCode.INVALID),
    ("2-vector", {"kind": "annotation.create", "type": "point", "position": [0, 0]}, ErrorCode.INVALID),
    ("far outside the patient", {"kind": "annotation.create", "type": "point", "position": [0, 0, 1e6]},
     ErrorCode.INVALID),
    ("control character", {**point(), "label": "a\u0007b"}, ErrorCode.INVALID),
    ("newline in a label", {**point(), "label": "two\nlines"}, ErrorCode.INVALID),
    ("lone surrogate", {**point(), "label": "\ud800"}, ErrorCode.INVALID),
    ("bad colour", {**point(), "color": "red"}, ErrorCode.INVALID),
    ("label too long", {**point(), "label": "x" * 201}, ErrorCode.LIMIT),
    ("note too long", {"kind": "annotation.create", "type": "note", "text": "x" * 4001}, ErrorCode.LIMIT),
    ("one-point stroke", {"kind": "annotation.create", "type": "stroke", "points": [[0, 0, 0]]},
     ErrorCode.INVALID),
    ("huge stroke", {"kind": "annotation.create", "type": "stroke",
                     "points": [[0, 0, i % 100] for i in range(2001)]}, ErrorCode.LIMIT),
    ("oversized op", {"kind": "annotation.create", "type": "note", "text": "x" * 3000,
                      "color": "#" + "0" * 70_000}, ErrorCode.LIMIT),
    ("negative version", {"kind": "annotation.delete", "id": "a1", "version": -1}, ErrorCode.INVALID),
    ("bad id", {"kind": "annotation.delete", "id": "a 1"}, ErrorCode.INVALID),
    ("empty update", {"kind": "annotation.update", "id": "a1"}, ErrorCode.INVALID),
    ("zero normal", {"kind": "clip.set", "plane": {"normal": [0, 0, 0], "constant": 0}}, ErrorCode.INVALID),
    ("plane with extra",
     {"kind": "clip.set", "plane": {"normal": [0, 1, 0], "constant": 0, "point": [0, 0, 0]}},
     ErrorCode.INVALID),
    ("not a unit quaternion", {"kind": "model.transform", "quaternion": [0, 0, 0, 0.5]}, ErrorCode.INVALID),
    ("zero scale", {"kind": "model.transform", "scale": 0}, ErrorCode.INVALID),
    ("empty transform", {"kind": "model.transform"}, ErrorCode.INVALID),
    ("model far away", {"kind": "model.transform", "position": [0, 0, 1000]}, ErrorCode.INVALID),
    ("lock with fields", {"kind": "room.lock", "model": True}, ErrorCode.INVALID),
    ("unknown role", {"kind": "participant.role", "participant": "stu", "role": "dean"}, ErrorCode.INVALID),
    ("mute as string", {"kind": "participant.mute", "participant": "stu", "muted": "yes"}, ErrorCode.INVALID),
    ("kick nobody", {"kind": "participant.kick"}, ErrorCode.INVALID),
]


@pytest.mark.parametrize(("case", "message", "code"), INVALID_OPS, ids=[case for case, _, _ in INVALID_OPS])
def test_malformed_ops_are_refused_and_leave_no_trace(case, message, code):
    room = new_room(PEOPLE)
    seq, head = room.seq, room.head
    with pytest.raises(OpError) as refused:
        room.apply(message, "ines", 1)
    assert refused.value.code is code, refused.value.detail
    assert (room.seq, room.head) == (seq, head)


def test_the_server_stamps_author_seq_and_time():
    clock = Clock()
    room = new_room(PEOPLE, clock=clock)
    at = clock()
    event = room.apply(point(label="apex"), "stu", at)
    assert (event.room, event.seq, event.at, event.author) == (ROOM, room.seq, at, "stu")
    assert event.data["layer"] == "stu"
    assert event.data["id"] == f"a{event.seq}"
    # The server clock stepping back never reorders time in the log.
    earlier = room.apply(point(), "stu", at - 5000)
    assert earlier.at == at


def test_every_op_kind_has_an_example_that_is_accepted():
    room = new_room(PEOPLE)
    aid = room.apply(point(), "sam", 1).data["id"]
    cid = room.apply({"kind": "clip.set", "plane": {"normal": [0, 0, 1], "constant": 0}}, "sam", 2).data["id"]
    examples = [
        {"kind": "annotation.create", "type": "stroke", "points": [[0, 0, 0], [1, 1, 1], [2, 1, 0]],
         "color": "#FF8800", "label": "incision"},
        {"kind": "annotation.create", "type": "note", "text": "check the dura"},
        {"kind": "annotation.update", "id": aid, "label": "apex"},
        {"kind": "annotation.delete", "id": aid},
        {"kind": "clip.set", "id": cid, "plane": {"normal": [0, 1, 0], "constant": -0.02}},
        {"kind": "clip.clear", "id": cid},
        {"kind": "model.transform", "position": [0, 1.1, -0.4], "quaternion": [0, 0, 0, 1], "scale": 1.5},
        {"kind": "pointer.highlight", "position": [0.01, 0.02, 0.03], "target": "mesh-bone"},
        {"kind": "room.lock"}, {"kind": "room.unlock"},
        {"kind": "participant.role", "participant": "stu", "role": "surgeon"},
        {"kind": "participant.mute", "participant": "stu", "muted": True},
        {"kind": "participant.kick", "participant": "obi"},
        {"kind": "follow.start"}, {"kind": "follow.stop"},
    ]
    kinds = {room.apply(message, "ines", 3).kind for message in examples}
    assert len(kinds) == 14
    assert room.state.annotations[f"a{room.seq - 14}"].fields["color"] == "#ff8800"


# ---- presence and moderation ---------------------------------------------------------------------------

def test_join_and_leave_are_server_events():
    room = new_room({})
    joined = room.join("ines", "  Dr Ines  ", Role.INSTRUCTOR, 5)
    assert (joined.author, joined.kind, joined.data) == (
        SERVER, "participant.join", {"participant": "ines", "name": "Dr Ines", "role": "instructor",
                                    "seat": {"index": 0, "tier": 0, "angle": 0.0}})
    assert room.join("ines", "Dr Ines", Role.INSTRUCTOR, 6) is None  # a second tab: no new event
    left = room.leave("ines", 7, "disconnected")
    assert (left.author, left.kind, left.data) == (SERVER, "participant.leave",
                                                   {"participant": "ines", "reason": "disconnected"})
    assert room.leave("ines", 8) is None
    assert room.present() == []
    with pytest.raises(OpError) as absent:
        room.apply({"kind": "room.lock"}, "ines", 9)
    assert (absent.value.code, absent.value.detail) == (ErrorCode.FORBIDDEN, "you are not in this room")


@pytest.mark.parametrize(("pid", "name"), [("", "x"), ("a b", "x"), (SERVER, "x"), ("p", ""), ("p", "   "),
                                           ("p", "n" * 65), ("p", "tab\there")])
def test_join_refuses_bad_ids_and_names(pid, name):
    room = new_room({})
    with pytest.raises(OpError) as refused:
        room.join(pid, name, Role.STUDENT, 1)
    assert refused.value.code in (ErrorCode.INVALID, ErrorCode.LIMIT)


def test_a_promotion_outlives_a_reconnect_and_the_invite_role_cannot_override_it():
    room = new_room(PEOPLE)
    room.apply({"kind": "participant.role", "participant": "stu", "role": "surgeon"}, "ines", 1)
    room.apply({"kind": "participant.role", "participant": "sam", "role": "observer"}, "ines", 2)
    room.leave("stu", 3)
    room.leave("sam", 4)
    assert room.join("stu", "Stu", Role.STUDENT, 5).data["role"] == "surgeon"
    assert room.join("sam", "Sam", Role.SURGEON, 6).data["role"] == "observer"
    room.apply({"kind": "clip.set", "plane": {"normal": [0, 0, 1], "constant": 0}}, "stu", 7)
    with pytest.raises(OpError):
        room.apply(point(), "sam", 8)


def test_mute_stops_tools_until_unmuted():
    room = new_room(PEOPLE)
    room.apply({"kind": "participant.mute", "participant": "stu", "muted": True}, "ines", 1)
    assert room.participant("stu").muted
    with pytest.raises(OpError) as muted:
        room.apply(point(), "stu", 2)
    assert muted.value.detail == "you are muted by the instructor"
    room.apply({"kind": "participant.mute", "participant": "stu", "muted": False}, "ines", 3)
    room.apply(point(), "stu", 4)


def test_promoting_a_muted_participant_to_instructor_unmutes_them():
    room = new_room(PEOPLE)
    room.apply({"kind": "participant.mute", "participant": "sam", "muted": True}, "ines", 1)
    room.apply({"kind": "participant.role", "participant": "sam", "role": "instructor"}, "ines", 2)
    assert not room.participant("sam").muted
    room.apply(point(), "sam", 3)


def test_a_kicked_participant_is_out_and_cannot_come_back():
    room = new_room(PEOPLE)
    kick = room.apply({"kind": "participant.kick", "participant": "stu"}, "ines", 1)
    assert kick.data == {"participant": "stu"}
    stu = room.participant("stu")
    assert (stu.present, stu.kicked) == (False, True)
    assert room.leave("stu", 2, "disconnected") is None  # the server's disconnect adds nothing
    with pytest.raises(OpError) as refused:
        room.join("stu", "Stu again", Role.STUDENT, 3)
    assert refused.value.code is ErrorCode.FORBIDDEN
    assert refused.value.detail == "you were removed from this room"
    with pytest.raises(OpError) as gone:
        room.apply({"kind": "participant.mute", "participant": "stu", "muted": True}, "ines", 4)
    assert gone.value.code is ErrorCode.NOT_FOUND


@pytest.mark.parametrize(("message", "code"), [
    ({"kind": "participant.kick", "participant": "ines"}, ErrorCode.INVALID),
    ({"kind": "participant.role", "participant": "ines", "role": "student"}, ErrorCode.INVALID),
    ({"kind": "participant.kick", "participant": "ivo"}, ErrorCode.FORBIDDEN),
    ({"kind": "participant.kick", "participant": "nobody"}, ErrorCode.NOT_FOUND),
    ({"kind": "participant.mute", "participant": "nobody", "muted": True}, ErrorCode.NOT_FOUND),
])
def test_moderation_targets(message, code):
    room = new_room({**PEOPLE, "ivo": Role.INSTRUCTOR})
    with pytest.raises(OpError) as refused:
        room.apply(message, "ines", 1)
    assert refused.value.code is code


def test_a_locked_model_stops_surgeons_but_not_instructors():
    room = new_room(PEOPLE)
    room.apply({"kind": "room.lock"}, "ines", 1)
    with pytest.raises(OpError) as locked:
        room.apply({"kind": "model.transform", "scale": 2}, "sam", 2)
    assert locked.value.detail == "the model is locked by the instructor"
    room.apply({"kind": "model.transform", "scale": 2}, "ines", 3)
    room.apply(point(), "sam", 4)  # annotating is not moving the model
    room.apply({"kind": "room.unlock"}, "ines", 5)
    room.apply({"kind": "model.transform", "scale": 1}, "sam", 6)


def test_a_closed_room_refuses_everything_and_everyone_has_left():
    room = new_room(PEOPLE)
    close = room.close(10)
    assert (close.kind, close.author) == ("room.close", SERVER)
    assert room.closed and room.present() == []
    assert room.snapshot_for("ines")["room"]["closed"] is True
    attempts = (lambda: room.apply(point(), "ines", 11), lambda: room.join("new", "New", Role.STUDENT, 12),
                lambda: room.close(13))
    for attempt in attempts:
        with pytest.raises(OpError) as refused:
            attempt()
        assert refused.value.detail == "the room is closed"


# ---- limits --------------------------------------------------------------------------------------------

def test_room_limits_on_annotations_and_participants():
    limits = RoomLimits(max_annotations=3, max_participants=2)
    room = new_room({"ines": Role.INSTRUCTOR, "sam": Role.SURGEON}, limits=limits)
    with pytest.raises(OpError) as full:
        room.join("stu", "Stu", Role.STUDENT, 1)
    assert full.value.code is ErrorCode.LIMIT
    room.leave("sam", 2)
    room.join("stu", "Stu", Role.STUDENT, 3)
    for _ in range(3):
        room.apply(point(), "stu", 4)
    with pytest.raises(OpError) as many:
        room.apply(point(), "ines", 5)
    assert many.value.code is ErrorCode.LIMIT
    room.apply({"kind": "annotation.delete", "id": sorted(room.state.annotations)[0]}, "ines", 6)
    room.apply(point(), "ines", 7)


def test_label_and_stroke_limits_are_configurable():
    room = new_room(PEOPLE, limits=RoomLimits(max_label_length=5, max_stroke_points=3))
    room.apply(point(label="apex"), "sam", 1)
    for message in (point(label="apexes"),
                    {"kind": "annotation.create", "type": "stroke", "points": [[0, 0, 0]] * 4}):
        with pytest.raises(OpError) as refused:
            room.apply(message, "sam", 2)
        assert refused.value.code is ErrorCode.LIMIT


def test_limits_must_be_positive():
    with pytest.raises(ValueError):
        RoomLimits(max_annotations=0)
    with pytest.raises(ValueError):
        RoomLimits(min_scale=5.0, max_scale=1.0)


@pytest.mark.parametrize(("room_id", "title", "meshes"), [("bad id", "", ()), ("r", "t\x00", ()),
                                                          ("r", "", ("mesh one",))])
def test_room_info_is_validated(room_id, title, meshes):
    with pytest.raises(OpError):
        RoomInfo(room_id, RoomMode.CONSULT, title, "", meshes)


def test_rate_limiter_allows_a_burst_then_the_rate():
    limiter = RateLimiter(rate=10, burst=5)
    assert [limiter.allow(0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow(0.05) is False  # half a token
    assert limiter.allow(0.1) is True
    # Sustained: over 10 s at 100 attempts/s, 10/s get through (plus nothing left of the burst).
    allowed = sum(limiter.allow(0.1 + i / 100) for i in range(1, 1001))
    assert allowed == pytest.approx(100, abs=2)
    assert limiter.tokens(1000.0) == 5  # refills to the burst, no further
    assert limiter.allow(999.0) is True  # a clock step back adds nothing and breaks nothing


def test_op_rate_limiter_follows_the_room_limits():
    limiter = op_rate_limiter(RoomLimits(op_rate=2, op_burst=3))
    assert [limiter.allow(0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow(0.5) is True


def test_violations_in_a_window_end_in_a_disconnect():
    counter = ViolationCounter.for_room(RoomLimits(max_violations=3, violation_window=10))
    assert [counter.record(t) for t in (0, 1, 2)] == [False] * 3
    assert counter.record(3) is True
    slow = ViolationCounter(limit=3, window=10)
    assert not any(slow.record(t * 5.0) for t in range(20))  # two per window is never abuse


# ---- catching up ---------------------------------------------------------------------------------------

def test_catch_up_sends_exactly_the_missed_events_or_asks_for_a_snapshot():
    room = new_room(PEOPLE, limits=RoomLimits(max_resume_events=10))
    for i in range(20):
        room.apply(point(float(i)), "sam", i)
    last = room.seq
    missed = room.catch_up(last - 7)
    assert [e.seq for e in missed] == list(range(last - 6, last + 1))
    assert room.catch_up(last) == []
    assert room.catch_up(last - 11) is None  # too far behind
    assert room.catch_up(last + 1) is None  # from the future
    assert room.catch_up(-1) is None
    assert [e.seq for e in room.events_since(3, 5)] == [4, 5]


def test_snapshot_for_a_participant():
    room = new_room(PEOPLE)
    room.apply(point(), "stu", 1)
    snapshot = room.snapshot_for("stu")
    assert set(snapshot) == {"room", "you", "participants", "state", "seq", "head"}
    assert snapshot["you"]["role"] == "student"
    assert snapshot["room"]["id"] == ROOM and snapshot["room"]["mode"] == "training"
    assert set(snapshot["state"]) == {"annotations", "clips", "slices", "model", "locks", "follow", "structures",
                                      "growing", "voice"}
    assert (snapshot["seq"], snapshot["head"]) == (room.seq, room.head)
    assert json.loads(json.dumps(snapshot)) == snapshot  # plain JSON: no tuples, enums or objects
    snapshot["state"]["annotations"].clear()  # a copy: changing it leaves the room alone
    snapshot["participants"]["stu"]["role"] = "instructor"
    assert room.state.annotations and room.participant("stu").role is Role.STUDENT


def test_a_room_locked_against_joins_admits_only_those_it_knows():
    clock = Clock()
    room = new_room({"ines": Role.INSTRUCTOR, "stu": Role.STUDENT}, clock=clock)
    room.leave("stu", clock())
    assert room.apply({"kind": "room.lock_joins"}, "ines", clock()).kind == "room.lock_joins"
    assert room.state.snapshot()["state"]["locks"] == {"model": False, "joins": True}
    with pytest.raises(OpError, match="locked the room against new joins") as refused:
        room.join("newcomer", "New", Role.STUDENT, clock())
    assert refused.value.code is ErrorCode.FORBIDDEN
    assert room.join("stu", "Stu", Role.STUDENT, clock()) is not None  # someone the room knows comes back
    room.apply({"kind": "room.unlock_joins"}, "ines", clock())
    assert room.join("newcomer", "New", Role.STUDENT, clock()) is not None
    assert RoomState.from_snapshot(room.state.snapshot()).joins_locked is False


def test_mesh_provenance_is_a_server_event_that_replays_and_changes_no_state():
    room = new_room({"ines": Role.INSTRUCTOR})
    before = room.state.snapshot()
    data = {"meshes": [{"mesh": "mesh-bone", "preset": "bone", "inputs": "ab" * 32, "glb": {"draco": "cd" * 32}}]}
    event = room.record_provenance(data, 1_700_000_000_500)
    assert (event.author, event.kind, event.data) == (SERVER, "mesh.provenance", data)
    after = room.state.snapshot()
    assert after["seq"] == before["seq"] + 1 and {**after, "seq": 0} == {**before, "seq": 0}
    assert room.open(room.log).state.snapshot() == after  # a restart replays it
    room.close(1_700_000_000_600)
    with pytest.raises(OpError) as refused:
        room.record_provenance(data, 1_700_000_000_700)
    assert refused.value.code is ErrorCode.FORBIDDEN

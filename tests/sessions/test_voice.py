"""Talk rights (sessions/voice.py): who may open a mic, raised hands in order, the instructor's allow and mute-all,
the invariant that every open mic may talk, replay, and which WebRTC signals may pass between whom.

Ops go through a real Room (sessions/room.py), so what is checked is what the server enforces.
"""

from __future__ import annotations

import json

import pytest
from rooms import Clock, new_room

from sessions.limits import RoomLimits
from sessions.log import EventLog, MemoryLogStore
from sessions.ops import ErrorCode, OpError
from sessions.roles import Role
from sessions.room import Room, RoomMode
from sessions.state import RoomState
from sessions.voice import check_signal, talk_reason

TEACHER, SURGEON, STUDENT, OBSERVER, OTHER = "ines", "sam", "stu", "obi", "sue"
PEOPLE = {TEACHER: Role.INSTRUCTOR, SURGEON: Role.SURGEON, STUDENT: Role.STUDENT, OBSERVER: Role.OBSERVER,
          OTHER: Role.STUDENT}
SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n"


def room_of(mode: RoomMode, limits: RoomLimits | None = None) -> Room:
    return new_room(PEOPLE, mode=mode, limits=limits)


def op(room: Room, who: str, kind: str, **fields) -> dict:
    """Apply an op; its event data."""
    return room.apply({"kind": kind, **fields}, who, 10**12).data


def refused(room: Room, who: str, kind: str, **fields) -> OpError:
    seq = room.seq
    with pytest.raises(OpError) as error:
        room.apply({"kind": kind, **fields}, who, 10**12)
    assert room.seq == seq  # a refused op leaves no trace
    return error.value


def mics(room: Room) -> list[str]:
    return list(room.state.voice.mics)


def hands(room: Room) -> list[str]:
    return list(room.state.voice.hands)


# ---- the talk-rights matrix -----------------------------------------------------------------------------------
# Whether voice.mic {on: true} passes, by mode x role x condition: none (nothing done), allowed (the instructor
# allowed the participant), withdrawn (the instructor withdrew it), muted (participant.mute).
# ok = opens; H = raise your hand (training); W = withdrawn (consult); M = muted; R = observers are read-only.
TALK = """
mode      role        | none  allowed  withdrawn  muted
consult   instructor  | ok    -        -          -
consult   surgeon     | ok    ok       W          M
consult   student     | ok    ok       W          M
consult   observer    | R     -        -          -
training  instructor  | ok    -        -          -
training  surgeon     | H     ok       H          M
training  student     | H     ok       H          M
training  observer    | R     -        -          -
"""
REASONS = {
    "H": "in a training room the instructor gives the floor: raise your hand",
    "W": "the instructor has withdrawn your voice",
    "M": "you are muted by the instructor",
    "R": "observers are read-only",
}


def _talk_cells():
    lines = TALK.strip().splitlines()
    conditions = lines[0].split("|")[1].split()
    for line in lines[1:]:
        head, codes = line.split("|")
        mode, role = head.split()
        for condition, code in zip(conditions, codes.split(), strict=True):
            if code != "-":
                yield RoomMode(mode), Role(role), condition, code


@pytest.mark.parametrize(("mode", "role", "condition", "code"), list(_talk_cells()))
def test_who_may_open_a_mic(mode, role, condition, code):
    who = {Role.INSTRUCTOR: TEACHER, Role.SURGEON: SURGEON, Role.STUDENT: STUDENT, Role.OBSERVER: OBSERVER}[role]
    room = room_of(mode)
    if condition in ("allowed", "withdrawn"):
        op(room, TEACHER, "voice.allow", participant=who, allowed=condition == "allowed")
    if condition == "muted":
        op(room, TEACHER, "participant.mute", participant=who, muted=True)
    if code == "ok":
        assert op(room, who, "voice.mic", on=True) == {"on": True}
        assert mics(room) == [who]
    else:
        error = refused(room, who, "voice.mic", on=True)
        assert (error.code, error.detail) == (ErrorCode.FORBIDDEN, REASONS[code])
        assert mics(room) == []


# ---- the training room: a student takes the floor ---------------------------------------------------------------
def test_a_student_talks_after_raising_a_hand_and_being_allowed():
    room = room_of(RoomMode.TRAINING)
    assert refused(room, STUDENT, "voice.mic", on=True).code is ErrorCode.FORBIDDEN
    op(room, STUDENT, "hand.raise")
    op(room, OTHER, "hand.raise")
    op(room, STUDENT, "hand.raise")  # again: keeps the first place in the queue
    assert hands(room) == [STUDENT, OTHER]
    assert refused(room, STUDENT, "voice.allow", participant=OTHER, allowed=True).code is ErrorCode.FORBIDDEN

    op(room, TEACHER, "voice.allow", participant=STUDENT, allowed=True)
    assert hands(room) == [OTHER]  # allowing lowers the hand
    op(room, STUDENT, "voice.mic", on=True)
    assert mics(room) == [STUDENT]
    op(room, STUDENT, "voice.mic", on=False)
    op(room, STUDENT, "voice.mic", on=True)  # the right stays until withdrawn
    op(room, TEACHER, "voice.allow", participant=OTHER, allowed=False)  # deny: the hand goes down, no right
    assert hands(room) == [] and refused(room, OTHER, "voice.mic", on=True).code is ErrorCode.FORBIDDEN

    op(room, TEACHER, "voice.allow", participant=STUDENT, allowed=False)  # withdrawn: the mic closes at once
    assert mics(room) == []
    assert refused(room, STUDENT, "voice.mic", on=True).detail == REASONS["H"]


def test_mute_all_closes_every_mic_but_the_instructors_and_in_training_withdraws_every_allow():
    room = room_of(RoomMode.TRAINING)
    op(room, TEACHER, "voice.mic", on=True)
    for who in (STUDENT, SURGEON):
        op(room, TEACHER, "voice.allow", participant=who, allowed=True)
        op(room, who, "voice.mic", on=True)
    op(room, OTHER, "hand.raise")
    assert mics(room) == [TEACHER, STUDENT, SURGEON]
    op(room, TEACHER, "voice.mute_all")
    assert mics(room) == [TEACHER] and hands(room) == [OTHER]  # hands stay: they are requests
    assert refused(room, STUDENT, "voice.mic", on=True).detail == REASONS["H"]


def test_mute_all_in_a_consult_closes_the_mics_and_people_may_open_them_again():
    room = room_of(RoomMode.CONSULT)
    op(room, SURGEON, "voice.mic", on=True)
    op(room, TEACHER, "voice.mic", on=True)
    op(room, TEACHER, "voice.mute_all")
    assert mics(room) == [TEACHER]
    op(room, SURGEON, "voice.mic", on=True)
    assert mics(room) == [TEACHER, SURGEON]


@pytest.mark.parametrize("withdrawal", ["mute", "kick", "leave", "demote", "withdrawn", "close"])
def test_every_withdrawn_right_closes_the_mic(withdrawal):
    room = room_of(RoomMode.CONSULT)
    op(room, SURGEON, "voice.mic", on=True)
    op(room, SURGEON, "hand.raise")
    op(room, OTHER, "voice.mic", on=True)
    if withdrawal == "mute":
        op(room, TEACHER, "participant.mute", participant=SURGEON, muted=True)
    elif withdrawal == "kick":
        op(room, TEACHER, "participant.kick", participant=SURGEON)
    elif withdrawal == "leave":
        room.leave(SURGEON, 10**12)
    elif withdrawal == "demote":  # a consult's surgeon becomes an observer
        op(room, TEACHER, "participant.role", participant=SURGEON, role="observer")
    elif withdrawal == "withdrawn":
        op(room, TEACHER, "voice.allow", participant=SURGEON, allowed=False)
    elif withdrawal == "close":
        room.close(10**12)
    assert SURGEON not in mics(room)
    assert (OTHER in mics(room)) is (withdrawal != "close")  # nobody else loses the floor
    if withdrawal in ("kick", "leave", "close"):
        assert SURGEON not in hands(room)


def test_an_instructor_demoted_in_a_training_room_loses_the_floor():
    room = room_of(RoomMode.TRAINING)
    op(room, TEACHER, "participant.role", participant=SURGEON, role="instructor")
    op(room, SURGEON, "voice.mic", on=True)
    op(room, TEACHER, "participant.role", participant=SURGEON, role="surgeon")
    assert mics(room) == []


def test_at_most_max_open_mics_are_open_and_the_next_gets_limit():
    people = {TEACHER: Role.INSTRUCTOR, **{f"s{i}": Role.SURGEON for i in range(4)}}
    room = new_room(people, mode=RoomMode.CONSULT, limits=RoomLimits(max_open_mics=3))
    for who in ("s0", "s1", "s2"):
        op(room, who, "voice.mic", on=True)
    op(room, "s0", "voice.mic", on=True)  # already open: not a new place
    error = refused(room, "s3", "voice.mic", on=True)
    assert error.code is ErrorCode.LIMIT and "3 microphones" in error.detail
    op(room, "s3", "voice.mic", on=False)  # closing is always fine
    op(room, "s1", "voice.mic", on=False)
    op(room, "s3", "voice.mic", on=True)
    assert mics(room) == ["s0", "s2", "s3"]


def test_voice_allow_names_a_participant_who_is_not_an_instructor_nor_yourself():
    room = room_of(RoomMode.TRAINING)
    assert refused(room, TEACHER, "voice.allow", participant="nobody", allowed=True).code is ErrorCode.NOT_FOUND
    assert refused(room, TEACHER, "voice.allow", participant=TEACHER, allowed=True).code is ErrorCode.INVALID
    op(room, TEACHER, "participant.role", participant=SURGEON, role="instructor")
    assert refused(room, TEACHER, "voice.allow", participant=SURGEON, allowed=False).detail == \
        "instructors may always talk"


@pytest.mark.parametrize(("kind", "fields", "detail"), [
    ("voice.mic", {}, "missing field 'on'"),
    ("voice.mic", {"on": 1}, "on must be true or false"),
    ("voice.mic", {"on": True, "participant": SURGEON}, "unknown field 'participant'"),
    ("hand.raise", {"participant": SURGEON}, "unknown field 'participant'"),
    ("voice.allow", {"participant": SURGEON}, "missing field 'allowed'"),
    ("voice.allow", {"participant": "a b", "allowed": True}, "participant must be an id"),
    ("voice.mute_all", {"author": TEACHER}, "'author' is set by the server"),
])
def test_malformed_voice_ops_are_invalid_with_a_reason(kind, fields, detail):
    room = room_of(RoomMode.TRAINING)
    error = refused(room, TEACHER, kind, **fields)
    assert error.code is ErrorCode.INVALID and error.detail.startswith(detail), error.detail


def test_the_floor_replays_from_the_log_and_survives_a_snapshot():
    store = MemoryLogStore()
    clock = Clock()
    room = new_room(PEOPLE, store=store, mode=RoomMode.TRAINING, clock=clock)
    room.apply({"kind": "hand.raise"}, STUDENT, clock())
    room.apply({"kind": "hand.raise"}, OTHER, clock())
    room.apply({"kind": "voice.allow", "participant": STUDENT, "allowed": True}, TEACHER, clock())
    room.apply({"kind": "voice.mic", "on": True}, STUDENT, clock())
    room.apply({"kind": "voice.mic", "on": True}, TEACHER, clock())
    voice = room.state.snapshot()["state"]["voice"]
    assert [m["participant"] for m in voice["mics"]] == [STUDENT, TEACHER]
    assert [h["participant"] for h in voice["hands"]] == [OTHER] and voice["allowed"] == {STUDENT: True}
    assert all(isinstance(m["at"], int) for m in voice["mics"] + voice["hands"])
    reopened = Room.open(EventLog(store, room.id))
    assert reopened.state.snapshot() == room.state.snapshot()
    assert RoomState.from_snapshot(json.loads(json.dumps(room.state.snapshot()))).snapshot() == room.state.snapshot()
    # Snapshots from before voice existed read as a quiet room.
    old = room.state.snapshot()
    del old["state"]["voice"]
    assert RoomState.from_snapshot(old).voice.mics == {}


# ---- signals ----------------------------------------------------------------------------------------------------
def signal(room: Room, sender: str, to: str, kind: str, **data):
    return check_signal(room.state, sender, {"to": to, "data": {"type": kind, "link": 1, **data}}, room.limits)


def signal_refused(room: Room, sender: str, message) -> OpError:
    with pytest.raises(OpError) as error:
        check_signal(room.state, sender, message, room.limits)
    return error.value


def test_only_an_open_mic_offers_and_listeners_only_answer_it():
    room = room_of(RoomMode.CONSULT)
    op(room, SURGEON, "voice.mic", on=True)
    assert signal(room, STUDENT, SURGEON, "request") == (SURGEON, {"type": "request", "link": 1})
    assert signal(room, SURGEON, STUDENT, "offer", sdp=SDP)[1]["sdp"] == SDP
    assert signal(room, STUDENT, SURGEON, "answer", sdp=SDP)[0] == SURGEON
    candidate = {"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
    assert signal(room, STUDENT, SURGEON, "candidate", candidate=candidate)[1]["candidate"] == candidate
    assert signal(room, SURGEON, STUDENT, "candidate", candidate=None)[1]["candidate"] is None

    def why(sender, to, kind, **data):
        return signal_refused(room, sender, {"to": to, "data": {"type": kind, "link": 1, **data}})

    # A closed mic offers nothing, and nobody answers or asks a closed mic.
    assert why(STUDENT, SURGEON, "offer", sdp=SDP).code is ErrorCode.FORBIDDEN
    assert why(SURGEON, STUDENT, "answer", sdp=SDP).code is ErrorCode.NOT_FOUND
    assert why(SURGEON, STUDENT, "request").code is ErrorCode.NOT_FOUND
    assert why(STUDENT, OTHER, "candidate", candidate=None).code is ErrorCode.NOT_FOUND
    # Once muted, the surgeon's offers are refused (the mic closed with the mute).
    op(room, TEACHER, "participant.mute", participant=SURGEON, muted=True)
    assert why(SURGEON, STUDENT, "offer", sdp=SDP).detail == "your mic is not open: only an open mic sends audio"


def test_a_signal_reaches_only_someone_present_in_the_same_room():
    room = room_of(RoomMode.CONSULT)
    op(room, SURGEON, "voice.mic", on=True)
    stranger = signal_refused(room, SURGEON, {"to": "someone-of-another-room",
                                              "data": {"type": "offer", "link": 1, "sdp": SDP}})
    assert stranger.code is ErrorCode.NOT_FOUND and "no participant" in stranger.detail
    room.leave(OTHER, 10**12)
    assert signal_refused(room, SURGEON, {"to": OTHER, "data": {"type": "offer", "link": 1, "sdp": SDP}}).code \
        is ErrorCode.NOT_FOUND
    assert signal_refused(room, OTHER, {"to": SURGEON, "data": {"type": "request", "link": 1}}).code \
        is ErrorCode.FORBIDDEN  # the sender left
    assert signal_refused(room, SURGEON, {"to": SURGEON, "data": {"type": "offer", "link": 1, "sdp": SDP}}).code \
        is ErrorCode.INVALID


@pytest.mark.parametrize(("message", "detail"), [
    ("offer", "a signal must be a JSON object"),
    ({"to": STUDENT}, "missing field 'data'"),
    ({"to": STUDENT, "data": {"type": "offer", "link": 1, "sdp": SDP}, "from": SURGEON}, "unknown field 'from'"),
    ({"to": STUDENT, "data": {"type": "hello", "link": 1}}, "data must be an object whose type"),
    ({"to": STUDENT, "data": {"type": "offer", "link": 1, "sdp": 5}}, "sdp must be a session description"),
    ({"to": STUDENT, "data": {"type": "offer", "link": -1, "sdp": SDP}}, "link must be an integer"),
    ({"to": STUDENT, "data": {"type": "offer", "link": 1, "sdp": SDP, "x": 1}}, "unknown field 'x'"),
    ({"to": STUDENT, "data": {"type": "candidate", "link": 1, "candidate": {"candidate": 1}}},
     "candidate must be null or an object"),
    ({"to": STUDENT, "data": {"type": "candidate", "link": 1, "candidate": {"candidate": "c", "sdpMLineIndex": "0"}}},
     "candidate.sdpMLineIndex must be a int"),
    ({"to": STUDENT, "data": {"type": "offer", "link": 1, "sdp": "v=0" + "x" * 20_000}}, "signal is 2"),
])
def test_malformed_signals_are_refused_with_a_reason(message, detail):
    room = room_of(RoomMode.CONSULT)
    op(room, SURGEON, "voice.mic", on=True)
    error = signal_refused(room, SURGEON, message)
    assert error.detail.startswith(detail), error.detail
    assert error.code is (ErrorCode.LIMIT if detail == "signal is 2" else ErrorCode.INVALID)


def test_talk_reason_says_why_in_words():
    room = room_of(RoomMode.TRAINING)
    assert talk_reason(room.state, TEACHER) is None
    assert talk_reason(room.state, OBSERVER) == "observers listen but do not talk"
    assert talk_reason(room.state, "nobody") == "you are not in this room"


def test_a_replay_shows_who_held_the_floor_when():
    from sessions.replay import state_at

    room = room_of(RoomMode.TRAINING)
    op(room, STUDENT, "hand.raise")
    raised = room.seq
    op(room, TEACHER, "voice.allow", participant=STUDENT, allowed=True)
    op(room, STUDENT, "voice.mic", on=True)
    talking = room.seq
    op(room, TEACHER, "voice.mute_all")
    room.close(10**12)
    events = room.events_since(0)
    assert list(state_at(events, raised).voice.hands) == [STUDENT]
    assert list(state_at(events, talking).voice.mics) == [STUDENT]
    assert state_at(events, room.seq).voice.mics == {} and state_at(events, room.seq).voice.hands == {}

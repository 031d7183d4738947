"""The permission matrix: every role x every op kind, under four conditions, checked two ways.

Each cell lists the outcome under: base (own annotation, model unlocked, not muted) | others (the op
targets someone else's annotation) | locked (the instructor locked the model) | muted (the sender is muted).
Codes: ok = allowed; R = observers are read-only; N = the role may not do it; O = own annotations only;
L = the model is locked; M = muted.

`may()` must give exactly these answers, and a real Room must enforce them end to end (ops sent through
Room.apply after the instructor has set up the condition). Who may open a mic also depends on the room's mode
and the instructor's allows: that is talk rights' own matrix, in tests/sessions/test_voice.py (here the voice.mic
op closes the sender's mic, which every role but the observer may always do).
"""

from __future__ import annotations

import pytest
from rooms import STRUCTURE, new_room

from sessions.ops import ErrorCode, OpError, OpKind
from sessions.protocol import OPS, may
from sessions.roles import Role

TABLE = """
kind               | instructor    | surgeon       | student       | observer
annotation.create  | ok ok ok M    | ok ok ok M    | ok ok ok M    | R R R R
annotation.update  | ok ok ok M    | ok ok ok M    | ok O ok M     | R R R R
annotation.delete  | ok ok ok M    | ok ok ok M    | ok O ok M     | R R R R
clip.set           | ok ok ok M    | ok ok ok M    | N N N N       | R R R R
clip.clear         | ok ok ok M    | ok ok ok M    | N N N N       | R R R R
slice.set          | ok ok ok M    | ok ok ok M    | N N N N       | R R R R
slice.clear        | ok ok ok M    | ok ok ok M    | N N N N       | R R R R
model.transform    | ok ok ok M    | ok ok L M     | N N N N       | R R R R
pointer.highlight  | ok ok ok M    | ok ok ok M    | ok ok ok M    | R R R R
room.lock          | ok ok ok ok   | N N N N       | N N N N       | R R R R
room.unlock        | ok ok ok ok   | N N N N       | N N N N       | R R R R
room.lock_joins    | ok ok ok ok   | N N N N       | N N N N       | R R R R
room.unlock_joins  | ok ok ok ok   | N N N N       | N N N N       | R R R R
participant.role   | ok ok ok ok   | N N N N       | N N N N       | R R R R
participant.mute   | ok ok ok ok   | N N N N       | N N N N       | R R R R
participant.kick   | ok ok ok ok   | N N N N       | N N N N       | R R R R
follow.start       | ok ok ok ok   | N N N N       | N N N N       | R R R R
follow.stop        | ok ok ok ok   | N N N N       | N N N N       | R R R R
structure.grow     | ok ok ok M    | ok ok ok M    | N N N N       | R R R R
structure.style    | ok ok ok M    | ok ok ok M    | N N N N       | R R R R
voice.mic          | ok ok ok ok   | ok ok ok ok   | ok ok ok ok   | R R R R
hand.raise         | ok ok ok ok   | ok ok ok ok   | ok ok ok ok   | R R R R
hand.lower         | ok ok ok ok   | ok ok ok ok   | ok ok ok ok   | R R R R
voice.allow        | ok ok ok ok   | N N N N       | N N N N       | R R R R
voice.mute_all     | ok ok ok ok   | N N N N       | N N N N       | R R R R
"""
CONDITIONS = ("base", "others", "locked", "muted")


def _cells() -> list[tuple[Role, str, str, str]]:
    """(role, kind, condition, code) for every cell of TABLE."""
    lines = [line for line in TABLE.strip().splitlines()]
    roles = [Role(name.strip()) for name in lines[0].split("|")[1:]]
    cells = []
    for line in lines[1:]:
        kind, *columns = (part.strip() for part in line.split("|"))
        for role, column in zip(roles, columns, strict=True):
            for condition, code in zip(CONDITIONS, column.split(), strict=True):
                cells.append((role, kind, condition, code))
    return cells


CELLS = _cells()


def _reason_matches(code: str, role: Role, reason: str | None) -> bool:
    """Whether `reason` (from may() or an OpError detail) is the one `code` stands for."""
    expected = {
        "ok": None,
        "R": "observers are read-only",
        "M": "you are muted by the instructor",
        "O": f"{role.value}s may only edit their own annotations",
        "L": "the model is locked by the instructor",
    }
    if code == "N":
        return reason is not None and reason.startswith(f"{role.value}s may not ")
    return reason == expected[code]


def test_table_covers_every_role_and_every_op_kind():
    covered = {(role, kind) for role, kind, _, _ in CELLS}
    assert covered == {(role, kind) for role in Role for kind in OpKind}
    assert set(OpKind) == set(OPS)
    assert len(CELLS) == len(Role) * len(OpKind) * len(CONDITIONS)


@pytest.mark.parametrize(("role", "kind", "condition", "code"), CELLS)
def test_may(role, kind, condition, code):
    reason = may(role, kind, own=condition != "others", locked=condition == "locked",
                 muted=condition == "muted")
    assert _reason_matches(code, role, reason), reason


# ---- end to end through a Room -------------------------------------------------------------------------

BOSS, ACTOR, TARGET = "boss", "actor", "target"


def _message(kind: str, own_id: str, others_id: str, condition: str) -> dict:
    """A valid op of `kind` from ACTOR, aimed at ACTOR's or TARGET's annotation, or at TARGET."""
    annotation = others_id if condition == "others" else own_id
    return {
        "annotation.create": {"type": "point", "position": [1, 2, 3], "label": "apex"},
        "annotation.update": {"id": annotation, "label": "renamed"},
        "annotation.delete": {"id": annotation},
        "clip.set": {"plane": {"normal": [0, 1, 0], "constant": 0.05}},
        "clip.clear": {},
        "slice.set": {"origin": [0, 0, 40], "u": [1, 0, 0], "v": [0, 1, 0], "width_mm": 200, "height_mm": 200,
                      "window": 1800, "level": 400},
        "slice.clear": {},
        "model.transform": {"position": [0, 1.2, -0.5]},
        "pointer.highlight": {"position": [0, 0.1, 0]},
        "room.lock": {},
        "room.unlock": {},
        "room.lock_joins": {},
        "room.unlock_joins": {},
        "participant.role": {"participant": TARGET, "role": "surgeon"},
        "participant.mute": {"participant": TARGET, "muted": True},
        "participant.kick": {"participant": TARGET},
        "follow.start": {},
        "follow.stop": {},
        "structure.grow": {"seed": [1.0, 2.0, 3.0], "name": "skull", "max_radius_mm": 120},
        "structure.style": {"mesh": STRUCTURE, "visible": False},
        "voice.mic": {"on": False},
        "hand.raise": {},
        "hand.lower": {},
        "voice.allow": {"participant": TARGET, "allowed": True},
        "voice.mute_all": {},
    }[kind] | {"kind": kind}


def _room_in_condition(role: Role, condition: str):
    """A room where ACTOR (now `role`) and TARGET each own one annotation, in `condition`."""
    room = new_room({BOSS: Role.INSTRUCTOR, ACTOR: Role.INSTRUCTOR, TARGET: Role.STUDENT})
    own = room.apply({"kind": "annotation.create", "type": "point", "position": [0, 0, 0]}, ACTOR, 10**12)
    others = room.apply({"kind": "annotation.create", "type": "point", "position": [9, 9, 9]}, TARGET, 10**12)
    if role is not Role.INSTRUCTOR:
        room.apply({"kind": "participant.role", "participant": ACTOR, "role": role.value}, BOSS, 10**12)
    if condition == "locked":
        room.apply({"kind": "room.lock"}, BOSS, 10**12)
    if condition == "muted":
        room.apply({"kind": "participant.mute", "participant": ACTOR, "muted": True}, BOSS, 10**12)
    return room, own.data["id"], others.data["id"]


ROOM_CELLS = [cell for cell in CELLS if not (cell[0] is Role.INSTRUCTOR and cell[2] == "muted")]


@pytest.mark.parametrize(("role", "kind", "condition", "code"), ROOM_CELLS)
def test_room_enforces_the_matrix(role, kind, condition, code):
    room, own_id, others_id = _room_in_condition(role, condition)
    seq = room.seq
    message = _message(kind, own_id, others_id, condition)
    if code == "ok":
        event = room.apply(message, ACTOR, 10**12)
        assert (event.seq, event.kind, event.author) == (seq + 1, kind, ACTOR)
    else:
        with pytest.raises(OpError) as refused:
            room.apply(message, ACTOR, 10**12)
        assert refused.value.code is ErrorCode.FORBIDDEN
        assert _reason_matches(code, role, refused.value.detail), refused.value.detail
        assert room.seq == seq  # a refused op leaves no trace


def test_an_instructor_cannot_be_muted():
    room, _, _ = _room_in_condition(Role.INSTRUCTOR, "base")
    with pytest.raises(OpError) as refused:
        room.apply({"kind": "participant.mute", "participant": ACTOR, "muted": True}, BOSS, 10**12)
    assert (refused.value.code, refused.value.detail) == (ErrorCode.FORBIDDEN, "instructors cannot be muted")

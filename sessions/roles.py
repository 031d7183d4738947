"""Roles in a room and the permission matrix: who may do which op, in one table.

`may(role, kind, own=..., locked=..., muted=...)` returns None when the op is allowed, or the reason it is
not, in words a participant can read. The room checks it for every op; tests/test_roles_matrix.py covers
every role x every op kind. Kinds are the strings of `sessions.ops.OpKind` (a StrEnum, so both work here).

- instructor: everything (promote/demote, mute, kick, lock the model, lead "follow me").
- surgeon: annotate (any annotation), measure, clip, point, and move the model unless it is locked.
- student: create annotations in their own layer, edit or delete only their own, point; can be muted.
- observer: read-only.

A muted participant may not use any tool (annotations, clip planes, model transform, pointer). The room
never mutes an instructor (it refuses the op), so "muted" only ever bites the other roles.
"""

from __future__ import annotations

from enum import Enum, StrEnum


class Role(StrEnum):
    """A participant's role in a room."""

    INSTRUCTOR = "instructor"
    SURGEON = "surgeon"
    STUDENT = "student"
    OBSERVER = "observer"


class Grant(Enum):
    """What one cell of the matrix allows."""

    ALWAYS = "always"
    OWN = "own"  # only the participant's own annotations
    UNLESS_LOCKED = "unless_locked"  # only while the model is not locked


TOOL_KINDS = frozenset({
    "annotation.create", "annotation.update", "annotation.delete",
    "clip.set", "clip.clear", "model.transform", "pointer.highlight",
})
MODERATION_KINDS = frozenset({
    "room.lock", "room.unlock",
    "participant.role", "participant.mute", "participant.kick",
    "follow.start", "follow.stop",
})
ALL_KINDS = TOOL_KINDS | MODERATION_KINDS

# A kind missing from a role's row is never allowed for that role.
MATRIX: dict[Role, dict[str, Grant]] = {
    Role.INSTRUCTOR: dict.fromkeys(ALL_KINDS, Grant.ALWAYS),
    Role.SURGEON: {
        "annotation.create": Grant.ALWAYS,
        "annotation.update": Grant.ALWAYS,
        "annotation.delete": Grant.ALWAYS,
        "clip.set": Grant.ALWAYS,
        "clip.clear": Grant.ALWAYS,
        "model.transform": Grant.UNLESS_LOCKED,
        "pointer.highlight": Grant.ALWAYS,
    },
    Role.STUDENT: {
        "annotation.create": Grant.ALWAYS,
        "annotation.update": Grant.OWN,
        "annotation.delete": Grant.OWN,
        "pointer.highlight": Grant.ALWAYS,
    },
    Role.OBSERVER: {},
}

_NOUNS = {
    "annotation.create": "create annotations",
    "annotation.update": "edit annotations",
    "annotation.delete": "delete annotations",
    "clip.set": "set clip planes",
    "clip.clear": "clear clip planes",
    "model.transform": "move the model",
    "pointer.highlight": "highlight",
    "room.lock": "lock the model",
    "room.unlock": "unlock the model",
    "participant.role": "change roles",
    "participant.mute": "mute participants",
    "participant.kick": "remove participants",
    "follow.start": "lead follow-me",
    "follow.stop": "end follow-me",
}


def may(role: Role, kind: str, *, own: bool = True, locked: bool = False, muted: bool = False) -> str | None:
    """None if `role` may perform op `kind`, else the reason. Requires `kind` in ALL_KINDS.

    `own`: the op targets the participant's own annotation (or creates one); `locked`: the model is
    locked by the instructor; `muted`: the participant's tools are muted by the instructor.
    """
    if kind not in ALL_KINDS:
        raise ValueError(f"unknown op kind {kind!r}")
    if role is Role.OBSERVER:
        return "observers are read-only"
    grant = MATRIX[role].get(kind)
    if grant is None:
        return f"{role.value}s may not {_NOUNS[kind]}"
    if muted and kind in TOOL_KINDS:
        return "you are muted by the instructor"
    if grant is Grant.OWN and not own:
        return f"{role.value}s may only edit their own annotations"
    if grant is Grant.UNLESS_LOCKED and locked:
        return "the model is locked by the instructor"
    return None


def permissions_table() -> dict:
    """The matrix as clients receive it (GET /api/config): {roles, matrix: {role: {kind: grant}}, tool_kinds,
    nouns}. A kind missing from a role's row is not allowed."""
    return {
        "roles": [role.value for role in Role],
        "matrix": {role.value: {kind: grant.value for kind, grant in sorted(MATRIX[role].items())} for role in Role},
        "tool_kinds": sorted(TOOL_KINDS),
        "nouns": dict(sorted(_NOUNS.items())),
    }

"""Roles in a room, and how a grant decides whether a participant may send an op.

Which role may send which op kind is declared with each kind in sessions/protocol.py (`OpSpec.grants`); this
module says what a grant means. `check(...)` returns None when the op is allowed, or the reason it is not, in
words a participant can read.

- instructor: everything (promote/demote, mute, kick, lock the model, lead "follow me").
- surgeon: annotate (any annotation), measure, clip, set slice planes, point, and move the model unless it is
  locked.
- student: create annotations in their own layer, edit or delete only their own, point; can be muted.
- observer: read-only.

A muted participant may not use any tool (annotations, clip and slice planes, model transform, pointer). The room
never mutes an instructor (it refuses the op), so "muted" only ever bites the other roles.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum, StrEnum


class Role(StrEnum):
    """A participant's role in a room."""

    INSTRUCTOR = "instructor"
    SURGEON = "surgeon"
    STUDENT = "student"
    OBSERVER = "observer"


class Grant(Enum):
    """What a role is granted for one op kind."""

    ALWAYS = "always"
    OWN = "own"  # only the participant's own annotations
    UNLESS_LOCKED = "unless_locked"  # only while the model is not locked


def grant_of(role: Role, grants: Mapping[Role, Grant]) -> Grant | None:
    """The role's grant for a kind whose grants (besides the instructor's) are `grants`; None: not allowed.

    The instructor may do everything; an observer nothing.
    """
    if role is Role.INSTRUCTOR:
        return Grant.ALWAYS
    if role is Role.OBSERVER:
        return None
    return grants.get(role)


def check(role: Role, grants: Mapping[Role, Grant], noun: str, *, tool: bool, own: bool = True,
          locked: bool = False, muted: bool = False) -> str | None:
    """None if `role` may send an op of a kind with these `grants`, else the reason.

    `noun` names what the kind does ("create annotations"); `tool`: a muted participant may not send it;
    `own`: the op targets the participant's own annotation (or creates one); `locked`: the model is locked by
    the instructor; `muted`: the participant is muted by the instructor.
    """
    if role is Role.OBSERVER:
        return "observers are read-only"
    grant = grant_of(role, grants)
    if grant is None:
        return f"{role.value}s may not {noun}"
    if muted and tool:
        return "you are muted by the instructor"
    if grant is Grant.OWN and not own:
        return f"{role.value}s may only edit their own annotations"
    if grant is Grant.UNLESS_LOCKED and locked:
        return "the model is locked by the instructor"
    return None

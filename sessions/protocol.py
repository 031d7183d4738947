"""The room protocol's kinds, each declared once: what a client may send and what the server writes.

For every op kind (`OpSpec`): its schema (the parser in sessions/ops.py), who may send it (grants; the
instructor may send everything, an observer nothing), the noun a refusal names, whether muting forbids it (a
tool), how the room checks it against its state and makes the event's data (`prepare`) and how the event
changes the state (`apply`). For every server event kind: how it changes the state. Adding a kind is one entry
here (plus its parser and its two state methods), and docs/protocol.md.

`parse_op`, `may`, `prepare` and `apply_event` dispatch on these tables; the Room (sessions/room.py) calls them
in that order, and a replay calls `apply_event` for every logged event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sessions import ops, voice
from sessions.events import Event, ServerKind
from sessions.limits import RoomLimits
from sessions.ops import Op, OpKind, check_size, invalid
from sessions.roles import Grant, Role, check, grant_of
from sessions.state import RoomState, StateError

Parser = Callable[[Mapping[str, Any], RoomLimits], dict[str, Any]]
Prepare = Callable[[RoomState, dict, str, int, RoomLimits], dict]
Apply = Callable[[RoomState, Event], None]

ALWAYS, OWN, UNLESS_LOCKED = Grant.ALWAYS, Grant.OWN, Grant.UNLESS_LOCKED
ANNOTATORS = {Role.SURGEON: ALWAYS, Role.STUDENT: ALWAYS}
INSTRUCTORS_ONLY: dict[Role, Grant] = {}
TALKERS = {Role.SURGEON: ALWAYS, Role.STUDENT: ALWAYS}  # the mode and the instructor decide who may talk


@dataclass(frozen=True)
class OpSpec:
    """One op kind: schema, permission, noun, and state transition."""

    parse: Parser
    noun: str
    prepare: Prepare
    apply: Apply
    grants: Mapping[Role, Grant] = field(default_factory=dict)
    tool: bool = False


OPS: dict[OpKind, OpSpec] = {
    OpKind.ANNOTATION_CREATE: OpSpec(
        ops.parse_annotation_create, "create annotations", RoomState.prepare_annotation_create,
        RoomState.apply_annotation_create, ANNOTATORS, tool=True),
    OpKind.ANNOTATION_UPDATE: OpSpec(
        ops.parse_annotation_update, "edit annotations", RoomState.prepare_annotation_update,
        RoomState.apply_annotation_update, {Role.SURGEON: ALWAYS, Role.STUDENT: OWN}, tool=True),
    OpKind.ANNOTATION_DELETE: OpSpec(
        ops.parse_annotation_delete, "delete annotations", RoomState.prepare_annotation_delete,
        RoomState.apply_annotation_delete, {Role.SURGEON: ALWAYS, Role.STUDENT: OWN}, tool=True),
    OpKind.CLIP_SET: OpSpec(
        ops.parse_clip_set, "set clip planes", RoomState.prepare_clip_set, RoomState.apply_clip_set,
        {Role.SURGEON: ALWAYS}, tool=True),
    OpKind.CLIP_CLEAR: OpSpec(
        ops.parse_one_or_all, "clear clip planes", RoomState.prepare_clip_clear, RoomState.apply_clip_clear,
        {Role.SURGEON: ALWAYS}, tool=True),
    OpKind.SLICE_SET: OpSpec(
        ops.parse_slice_set, "set slice planes", RoomState.prepare_slice_set, RoomState.apply_slice_set,
        {Role.SURGEON: ALWAYS}, tool=True),
    OpKind.SLICE_CLEAR: OpSpec(
        ops.parse_one_or_all, "clear slice planes", RoomState.prepare_slice_clear, RoomState.apply_slice_clear,
        {Role.SURGEON: ALWAYS}, tool=True),
    OpKind.MODEL_TRANSFORM: OpSpec(
        ops.parse_model_transform, "move the model", RoomState.prepare_model_transform,
        RoomState.apply_model_transform, {Role.SURGEON: UNLESS_LOCKED}, tool=True),
    OpKind.POINTER_HIGHLIGHT: OpSpec(
        ops.parse_pointer_highlight, "highlight", RoomState.prepare_as_is, RoomState.apply_nothing, ANNOTATORS,
        tool=True),
    OpKind.ROOM_LOCK: OpSpec(
        ops.parse_no_fields, "lock the model", RoomState.prepare_as_is, RoomState.apply_lock, INSTRUCTORS_ONLY),
    OpKind.ROOM_UNLOCK: OpSpec(
        ops.parse_no_fields, "unlock the model", RoomState.prepare_as_is, RoomState.apply_lock, INSTRUCTORS_ONLY),
    OpKind.ROOM_LOCK_JOINS: OpSpec(
        ops.parse_no_fields, "lock the room against new joins", RoomState.prepare_as_is, RoomState.apply_joins_lock,
        INSTRUCTORS_ONLY),
    OpKind.ROOM_UNLOCK_JOINS: OpSpec(
        ops.parse_no_fields, "open the room to new joins", RoomState.prepare_as_is, RoomState.apply_joins_lock,
        INSTRUCTORS_ONLY),
    OpKind.PARTICIPANT_ROLE: OpSpec(
        ops.parse_participant_role, "change roles", RoomState.prepare_participant_role,
        RoomState.apply_participant_role, INSTRUCTORS_ONLY),
    OpKind.PARTICIPANT_MUTE: OpSpec(
        ops.parse_participant_mute, "mute participants", RoomState.prepare_participant_mute,
        RoomState.apply_participant_mute, INSTRUCTORS_ONLY),
    OpKind.PARTICIPANT_KICK: OpSpec(
        ops.parse_participant_kick, "remove participants", RoomState.prepare_participant_kick,
        RoomState.apply_participant_kick, INSTRUCTORS_ONLY),
    OpKind.FOLLOW_START: OpSpec(
        ops.parse_no_fields, "lead follow-me", RoomState.prepare_as_is, RoomState.apply_follow, INSTRUCTORS_ONLY),
    OpKind.FOLLOW_STOP: OpSpec(
        ops.parse_no_fields, "end follow-me", RoomState.prepare_as_is, RoomState.apply_follow, INSTRUCTORS_ONLY),
    OpKind.STRUCTURE_GROW: OpSpec(
        ops.parse_structure_grow, "grow structures", RoomState.prepare_structure_grow,
        RoomState.apply_structure_grow, {Role.SURGEON: ALWAYS}, tool=True),
    OpKind.STRUCTURE_STYLE: OpSpec(
        ops.parse_structure_style, "show or hide structures", RoomState.prepare_structure_style,
        RoomState.apply_structure_style, {Role.SURGEON: ALWAYS}, tool=True),
    # Talk rights (sessions/voice.py): the room, not the grant, says who may open a mic (mode, allows, mutes).
    OpKind.VOICE_MIC: OpSpec(
        voice.parse_voice_mic, "use a microphone", voice.prepare_voice_mic, voice.apply_voice_mic, TALKERS),
    OpKind.HAND_RAISE: OpSpec(
        ops.parse_no_fields, "raise a hand", RoomState.prepare_as_is, voice.apply_hand_raise, TALKERS),
    OpKind.HAND_LOWER: OpSpec(
        ops.parse_no_fields, "lower a hand", RoomState.prepare_as_is, voice.apply_hand_lower, TALKERS),
    OpKind.VOICE_ALLOW: OpSpec(
        voice.parse_voice_allow, "give or withdraw the floor", voice.prepare_voice_allow, voice.apply_voice_allow,
        INSTRUCTORS_ONLY),
    OpKind.VOICE_MUTE_ALL: OpSpec(
        ops.parse_no_fields, "mute everyone", RoomState.prepare_as_is, voice.apply_voice_mute_all, INSTRUCTORS_ONLY),
}

SERVER_EVENTS: dict[ServerKind, Apply] = {
    ServerKind.ROOM_OPEN: RoomState.apply_room_open,
    ServerKind.ROOM_CLOSE: RoomState.apply_room_close,
    ServerKind.PARTICIPANT_JOIN: RoomState.apply_participant_join,
    ServerKind.PARTICIPANT_LEAVE: RoomState.apply_participant_leave,
    ServerKind.MESH_PROVENANCE: RoomState.apply_nothing,  # a record of where the meshes came from, not state
    ServerKind.STRUCTURE_ADD: RoomState.apply_structure_add,
    ServerKind.STRUCTURE_FAIL: RoomState.apply_structure_fail,
}

_APPLY: dict[str, Apply] = {**{str(kind): spec.apply for kind, spec in OPS.items()},
                            **{str(kind): apply for kind, apply in SERVER_EVENTS.items()}}


def parse_op(message: Any, limits: RoomLimits) -> Op:
    """The validated Op of a client message {kind, ...fields}, or OpError. Requires nothing of `message`."""
    if not isinstance(message, Mapping):
        raise invalid("an op must be a JSON object")
    check_size(message, limits.max_op_bytes)
    kind_name = message.get("kind")
    try:
        kind = OpKind(kind_name)
    except ValueError:
        raise invalid(f"unknown op kind {kind_name!r}") from None
    fields = {key: value for key, value in message.items() if key != "kind"}
    return Op(kind, OPS[kind].parse(fields, limits))


def may(role: Role, kind: OpKind | str, *, own: bool = True, locked: bool = False, muted: bool = False) -> str | None:
    """None if `role` may send op `kind`, else the reason (see sessions/roles.check). Requires a known kind."""
    spec = OPS[OpKind(kind)]
    return check(role, spec.grants, spec.noun, tool=spec.tool, own=own, locked=locked, muted=muted)


def prepare(state: RoomState, op: Op, author: str, seq: int, limits: RoomLimits) -> dict[str, Any]:
    """The data of the event that `op` by `author` becomes at `seq`, or OpError. Changes nothing.

    Requires a parsed op whose permission the room has already checked.
    """
    return OPS[op.kind].prepare(state, op.data, author, seq, limits)


def apply_event(state: RoomState, event: Event) -> None:
    """Apply the next event to `state`. Requires event.seq == state.seq + 1 and data made by `prepare` (or by
    the room, for server events); raises StateError otherwise."""
    if event.seq != state.seq + 1:
        raise StateError(f"event seq {event.seq} does not follow state seq {state.seq}")
    handler = _APPLY.get(event.kind)
    if handler is None:
        raise StateError(f"event {event.seq}: unknown kind {event.kind!r}")
    try:
        handler(state, event)
        voice.settle(state, event)
    except (KeyError, TypeError, ValueError) as error:
        raise StateError(f"event {event.seq} ({event.kind}) cannot apply: {error!r}") from error
    state.seq = event.seq


def permissions_table() -> dict[str, Any]:
    """The permissions as clients receive them (GET /api/config): {roles, matrix: {role: {kind: grant}},
    tool_kinds, nouns}. A kind missing from a role's row is not allowed."""
    matrix = {role.value: {} for role in Role}
    for kind, spec in OPS.items():
        for role in Role:
            grant = grant_of(role, spec.grants)
            if grant is not None:
                matrix[role.value][kind.value] = grant.value
    return {
        "roles": [role.value for role in Role],
        "matrix": matrix,
        "tool_kinds": sorted(kind.value for kind, spec in OPS.items() if spec.tool),
        "nouns": {kind.value: spec.noun for kind, spec in OPS.items()},
    }

"""Ops: what a client may ask a room to do, their schema, and typed errors.

Each kind's parser (`parse_<kind>`) turns the fields of an untrusted client message into the op's `data`,
validated and normalised (numbers as finite floats, unit vectors and quaternions normalised, strings
bounded). sessions/protocol.py says which parser each kind uses (`parse_op`). A parser checks the message
alone; what depends on the room (does the annotation exist, is the version stale, may this role do it) is
checked by `sessions.state` and `sessions.room`.

Never trusted from a client: author, seq, time, role of the sender, room, hash, layer and any server-computed
value (a measurement's length). A message carrying one is rejected, as is any unknown field.

Coordinates:
- Annotation and measurement positions (`position`, `a`, `b`, stroke `points`) are patient LPS millimetres.
  The client maps a picked model-space point to LPS with the inverse matrix in the GLB's `extras`, so the
  server measures in LPS directly and never from scaled or transformed client coordinates.
- Slice planes (`origin`, `u`, `v`) are patient LPS too: what the image shows is the patient's, at its true place.
- Clip planes, the model transform and the pointer are model space: glTF metres, +Y up, the GLB's frame
  (the model transform places that frame in the shared room).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sessions.limits import RoomLimits
from sessions.roles import Role


class ErrorCode(StrEnum):
    """Why an op was refused: the `code` of a negative ack."""

    INVALID = "invalid"  # the message breaks the schema or a bound
    FORBIDDEN = "forbidden"  # the sender's role, mute or the lock forbids it
    STALE_VERSION = "stale_version"  # the op's `version` is older than the object's; see `version`
    NOT_FOUND = "not_found"  # the annotation, clip plane or participant does not exist
    LIMIT = "limit"  # a room or client limit is reached (annotations, participants, size, rate)


class OpError(Exception):
    """A refused op: `code`, a readable `detail`, and for stale_version the object's current `version`."""

    def __init__(self, code: ErrorCode, detail: str, version: int | None = None):
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail
        self.version = version

    def to_json(self) -> dict[str, Any]:
        """The `error` of a negative ack: {code, detail, version?}."""
        error: dict[str, Any] = {"code": self.code.value, "detail": self.detail}
        if self.version is not None:
            error["version"] = self.version
        return error


def invalid(detail: str) -> OpError:
    """An `invalid` OpError. Requires a readable detail."""
    return OpError(ErrorCode.INVALID, detail)


class OpKind(StrEnum):
    """Every op a client may send."""

    ANNOTATION_CREATE = "annotation.create"
    ANNOTATION_UPDATE = "annotation.update"
    ANNOTATION_DELETE = "annotation.delete"
    CLIP_SET = "clip.set"
    CLIP_CLEAR = "clip.clear"
    SLICE_SET = "slice.set"
    SLICE_CLEAR = "slice.clear"
    MODEL_TRANSFORM = "model.transform"
    POINTER_HIGHLIGHT = "pointer.highlight"
    ROOM_LOCK = "room.lock"
    ROOM_UNLOCK = "room.unlock"
    ROOM_LOCK_JOINS = "room.lock_joins"
    ROOM_UNLOCK_JOINS = "room.unlock_joins"
    PARTICIPANT_ROLE = "participant.role"
    PARTICIPANT_MUTE = "participant.mute"
    PARTICIPANT_KICK = "participant.kick"
    FOLLOW_START = "follow.start"
    FOLLOW_STOP = "follow.stop"
    STRUCTURE_GROW = "structure.grow"
    STRUCTURE_STYLE = "structure.style"
    VOICE_MIC = "voice.mic"  # talk rights: sessions/voice.py
    HAND_RAISE = "hand.raise"
    HAND_LOWER = "hand.lower"
    VOICE_ALLOW = "voice.allow"
    VOICE_MUTE_ALL = "voice.mute_all"


class AnnotationType(StrEnum):
    """The kinds of annotation."""

    POINT = "point"
    MEASUREMENT = "measurement"
    STROKE = "stroke"
    NOTE = "note"


# The fields a client may set on each annotation type (besides `type`), each marked required at create or not.
ANNOTATION_FIELDS: dict[AnnotationType, dict[str, bool]] = {
    AnnotationType.POINT: {"position": True, "label": False, "color": False},
    AnnotationType.MEASUREMENT: {"a": True, "b": True, "label": False, "color": False},
    AnnotationType.STROKE: {"points": True, "label": False, "color": False},
    AnnotationType.NOTE: {"text": True, "position": False, "color": False},
}

# A slice plane's fields: its centre (LPS mm), its row and column directions, its size (mm), its window.
SLICE_FIELDS = ("origin", "u", "v", "width_mm", "height_mm", "window", "level")
ORTHOGONAL_TOLERANCE = 1e-3  # |u . v| of a slice plane's unit directions; within it, v is made exactly orthogonal

SERVER_FIELDS = frozenset({"author", "seq", "at", "time", "room", "hash", "layer", "length_mm", "versions"})
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
_UNIT_TOLERANCE = 0.1  # a quaternion's norm may be off by this much; it is then normalised


@dataclass(frozen=True)
class Op:
    """A validated op: its kind and normalised fields (JSON-able, without `kind`)."""

    kind: OpKind
    data: dict[str, Any]


def check_size(message: Mapping[str, Any], max_bytes: int, what: str = "op") -> None:
    """Refuse a message (an op, or `what`) larger than `max_bytes` as JSON. Requires a mapping."""
    try:
        size = len(json.dumps(message, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass"))
    except (TypeError, ValueError) as error:
        raise invalid(f"not a JSON message: {error}") from None
    if size > max_bytes:
        raise OpError(ErrorCode.LIMIT, f"{what} is {size} bytes, the limit is {max_bytes}")


def _expect(fields: Mapping[str, Any], required: set[str], optional: set[str] = frozenset()) -> None:
    """Refuse missing, unknown or server-only fields. Requires a mapping of the fields besides `kind`."""
    for key in fields:
        if key in SERVER_FIELDS:
            raise invalid(f"'{key}' is set by the server, not the client")
        if key not in required and key not in optional:
            raise invalid(f"unknown field {key!r}")
    missing = sorted(required - set(fields))
    if missing:
        raise invalid(f"missing field {missing[0]!r}")


expect_fields = _expect  # for the parsers of other modules (sessions/voice.py)


# ---- values -------------------------------------------------------------------------------------------


def number(value: Any, path: str, low: float = -math.inf, high: float = math.inf) -> float:
    """`value` as a finite float in [low, high]. Requires nothing of `value`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"{path} must be a number")
    try:
        result = float(value)
    except OverflowError:
        raise invalid(f"{path} is too large") from None
    if not math.isfinite(result):
        raise invalid(f"{path} must be finite")
    if not low <= result <= high:
        raise invalid(f"{path} = {result} is outside [{low}, {high}]")
    return result


def vector(value: Any, path: str, length: int, bound: float) -> list[float]:
    """`value` as `length` finite floats each within +-bound. Requires nothing of `value`.

    Poses bring thousands of these a second: a list of plain numbers in bounds is checked without building a
    message; anything else is checked item by item, naming the first bad one.
    """
    if type(value) is list and len(value) == length:
        floats = _floats_within(value, bound)
        if floats is not None:
            return floats
    if not isinstance(value, list | tuple) or len(value) != length:
        raise invalid(f"{path} must be an array of {length} numbers")
    return [number(item, f"{path}[{i}]", -bound, bound) for i, item in enumerate(value)]


def _floats_within(values: list[Any], bound: float) -> list[float] | None:
    """The items as floats if each is an int or float within +-bound, else None.

    NaN fails every comparison, so it is refused with the infinities (and bool is neither int nor float here)."""
    out = []
    for item in values:
        kind = type(item)
        if kind is not int and kind is not float:
            return None
        if not -bound <= item <= bound:  # before float(): an int of 400 digits has no float
            return None
        out.append(float(item))
    return out


def unit_vector(value: Any, path: str) -> list[float]:
    """`value` as a normalised 3-vector. Requires nothing of `value`; refuses a (near) zero vector."""
    v = vector(value, path, 3, 1e6)
    norm = math.sqrt(sum(c * c for c in v))
    if norm < 1e-9:
        raise invalid(f"{path} must not be a zero vector")
    return [c / norm for c in v]


def quaternion(value: Any, path: str) -> list[float]:
    """`value` as a unit quaternion [x, y, z, w] (three.js order). Requires a norm within 10% of 1."""
    q = vector(value, path, 4, 2.0)
    norm = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    if abs(norm - 1.0) > _UNIT_TOLERANCE:
        raise invalid(f"{path} must be a unit quaternion (norm {norm:.3f})")
    return [c / norm for c in q]


def text(value: Any, path: str, max_length: int, *, multiline: bool = False) -> str:
    """`value` as a string of at most `max_length` characters, without control characters.

    Requires nothing of `value`; with `multiline`, newlines and tabs are allowed.
    """
    if not isinstance(value, str):
        raise invalid(f"{path} must be a string")
    if len(value) > max_length:
        raise OpError(ErrorCode.LIMIT, f"{path} has {len(value)} characters, the limit is {max_length}")
    allowed = "\n\t" if multiline else ""
    if any((ord(c) < 0x20 and c not in allowed) or ord(c) == 0x7F for c in value):
        raise invalid(f"{path} contains a control character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(f"{path} is not valid Unicode (lone surrogate)") from None
    return value


def identifier(value: Any, path: str) -> str:
    """`value` as an id: 1-128 characters of [A-Za-z0-9_.:-]. Requires nothing of `value`."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise invalid(f"{path} must be an id of 1-128 characters [A-Za-z0-9_.:-]")
    return value


def _version(fields: Mapping[str, Any]) -> dict[str, int]:
    """{"version": n} if the op carries one, else {}. Requires a mapping."""
    if "version" not in fields:
        return {}
    value = fields["version"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid("version must be a non-negative integer")
    return {"version": value}


def _color(value: Any) -> str:
    """`value` as a lower-case "#rrggbb" colour. Requires nothing of `value`."""
    if not isinstance(value, str) or not _COLOR.fullmatch(value):
        raise invalid('color must be "#rrggbb"')
    return value.lower()


def _lps(value: Any, path: str, limits: RoomLimits) -> list[float]:
    """An LPS position in mm within the room's bound. Requires nothing of `value`."""
    return vector(value, path, 3, limits.max_coordinate_mm)


def _points(value: Any, limits: RoomLimits) -> list[list[float]]:
    """A stroke's LPS points: 2..max_stroke_points positions. Requires nothing of `value`."""
    if not isinstance(value, list) or len(value) < 2:
        raise invalid("points must be an array of at least 2 positions")
    if len(value) > limits.max_stroke_points:
        raise OpError(ErrorCode.LIMIT, f"a stroke has at most {limits.max_stroke_points} points")
    return [_lps(point, f"points[{i}]", limits) for i, point in enumerate(value)]


def annotation_field(name: str, value: Any, limits: RoomLimits) -> Any:
    """The normalised value of annotation field `name`. Requires `name` in some ANNOTATION_FIELDS."""
    if name in ("position", "a", "b"):
        return _lps(value, name, limits)
    if name == "points":
        return _points(value, limits)
    if name == "label":
        return text(value, "label", limits.max_label_length)
    if name == "text":
        return text(value, "text", limits.max_note_length, multiline=True)
    if name == "color":
        return _color(value)
    raise invalid(f"unknown annotation field {name!r}")


# ---- one parser per kind ------------------------------------------------------------------------------


def parse_annotation_create(fields: Mapping[str, Any], limits: RoomLimits) -> dict[str, Any]:
    """{type, ...fields} of a new annotation. Requires the op's fields."""
    try:
        kind = AnnotationType(fields.get("type"))
    except ValueError:
        raise invalid(f"annotation type must be one of {[t.value for t in AnnotationType]}") from None
    spec = ANNOTATION_FIELDS[kind]
    _expect(fields, {"type"} | {name for name, required in spec.items() if required}, set(spec))
    data: dict[str, Any] = {"type": kind.value}
    for name in spec:
        if name in fields:
            data[name] = annotation_field(name, fields[name], limits)
    return data


def parse_annotation_update(fields: Mapping[str, Any], limits: RoomLimits) -> dict[str, Any]:
    """{id, version?, ...changed fields}. Requires the op's fields; the type check is the state's."""
    if "type" in fields:
        raise invalid("the type of an annotation cannot change")
    editable = set().union(*ANNOTATION_FIELDS.values())
    _expect(fields, {"id"}, {"version"} | editable)
    changed = {
        name: None if name == "position" and fields[name] is None
        else annotation_field(name, fields[name], limits)
        for name in sorted(editable & set(fields))
    }
    if not changed:
        raise invalid("an update must change at least one field")
    return {"id": identifier(fields["id"], "id"), **_version(fields), **changed}


def parse_annotation_delete(fields: Mapping[str, Any], limits: RoomLimits) -> dict[str, Any]:
    """{id, version?}. Requires the op's fields."""
    _expect(fields, {"id"}, {"version"})
    return {"id": identifier(fields["id"], "id"), **_version(fields)}


def parse_clip_set(fields: Mapping[str, Any], limits: RoomLimits) -> dict[str, Any]:
    """{id?, version?, normal, constant}: the plane normal . x + constant = 0 in model space (metres).

    Requires the op's fields; `plane` is {normal, constant} or {point, normal}.
    """
    _expect(fields, {"plane"}, {"id", "version"})
    plane = fields["plane"]
    if not isinstance(plane, Mapping):
        raise invalid("plane must be an object {normal, constant} or {point, normal}")
    bound = limits.max_model_metres
    if set(plane) == {"normal", "constant"}:
        normal = unit_vector(plane["normal"], "plane.normal")
        constant = number(plane["constant"], "plane.constant", -2 * bound, 2 * bound)
    elif set(plane) == {"point", "normal"}:
        normal = unit_vector(plane["normal"], "plane.normal")
        point = vector(plane["point"], "plane.point", 3, bound)
        constant = -sum(n * p for n, p in zip(normal, point, strict=True))
    else:
        raise invalid("plane must be an object {normal, constant} or {point, normal}")
    data: dict[str, Any] = {"normal": normal, "constant": constant}
    if "id" in fields:
        data["id"] = identifier(fields["id"], "id")
    return {**data, **_version(fields)}


def parse_one_or_all(fields: Mapping[str, Any], limits: RoomLimits) -> dict[str, Any]:
    """{id?}: one plane (clip or slice), or all of them. Requires the op's fields."""
    _expect(fields, set(), {"id"})
    return {"id": identifier(fields["id"], "id")} if "id" in fields else {}


def parse_slice_set(fields: Mapping[str, Any], limits: RoomLimits) -> dict[str, Any]:
    """{id?, version?, ...slice fields}: a new plane (every field), or the fields of one that change (with id).

    Requires the op's fields. `u` and `v` come together; they are normalised and must be orthogonal.
    """
    _expect(fields, set() if "id" in fields else set(SLICE_FIELDS), {"id", "version", *SLICE_FIELDS})
    data: dict[str, Any] = {}
    if "origin" in fields:
        data["origin"] = _lps(fields["origin"], "origin", limits)
    if ("u" in fields) != ("v" in fields):
        raise invalid("u and v change together: send both")
    if "u" in fields:
        data["u"], data["v"] = _orthonormal(unit_vector(fields["u"], "u"), unit_vector(fields["v"], "v"))
    for name in ("width_mm", "height_mm"):
        if name in fields:
            data[name] = number(fields[name], name, 0.0, limits.max_slice_size_mm)
            if data[name] <= 0.0:
                raise invalid(f"{name} must be positive")
    if "window" in fields:
        data["window"] = number(fields["window"], "window", 0.0, limits.max_window)
        if data["window"] <= 0.0:
            raise invalid("window must be positive")
    if "level" in fields:
        data["level"] = number(fields["level"], "level", -limits.max_window, limits.max_window)
    if not data:
        raise invalid("slice.set of an existing plane must change at least one field")
    if "id" in fields:
        data["id"] = identifier(fields["id"], "id")
    return {**data, **_version(fields)}


def _orthonormal(u: list[float], v: list[float]) -> tuple[list[float], list[float]]:
    """Unit `u` and `v` made exactly orthogonal (v loses its component along u). Requires unit vectors."""
    cosine = sum(a * b for a, b in zip(u, v, strict=True))
    if abs(cosine) > ORTHOGONAL_TOLERANCE:
        raise invalid(f"u and v must be orthogonal (u . v = {cosine:.6g})")
    w = [b - cosine * a for a, b in zip(u, v, strict=True)]
    norm = math.sqrt(sum(c * c for c in w))
    return u, [c / norm for c in w]


def parse_model_transform(fields: Mapping[str, Any], limits: RoomLimits) -> dict[str, Any]:
    """{position?, quaternion?, scale?, version?}, at least one of the three. Requires the op's fields."""
    _expect(fields, set(), {"position", "quaternion", "scale", "version"})
    data: dict[str, Any] = {}
    if "position" in fields:
        data["position"] = vector(fields["position"], "position", 3, limits.max_model_metres)
    if "quaternion" in fields:
        data["quaternion"] = quaternion(fields["quaternion"], "quaternion")
    if "scale" in fields:
        data["scale"] = number(fields["scale"], "scale", limits.min_scale, limits.max_scale)
    if not data:
        raise invalid("model.transform needs position, quaternion or scale")
    return {**data, **_version(fields)}


def parse_pointer_highlight(fields: Mapping[str, Any], limits: RoomLimits) -> dict[str, Any]:
    """{position, target?}: a model-space point and optionally the id of what it points at."""
    _expect(fields, {"position"}, {"target"})
    data: dict[str, Any] = {"position": vector(fields["position"], "position", 3, limits.max_model_metres)}
    if "target" in fields:
        data["target"] = identifier(fields["target"], "target")
    return data


def parse_no_fields(fields: Mapping[str, Any], limits: RoomLimits) -> dict[str, Any]:
    """{}: the op carries nothing but its kind. Requires the op's fields."""
    _expect(fields, set())
    return {}


def parse_participant_role(fields: Mapping[str, Any], limits: RoomLimits) -> dict[str, Any]:
    """{participant, role}. Requires the op's fields."""
    _expect(fields, {"participant", "role"})
    try:
        role = Role(fields["role"])
    except ValueError:
        raise invalid(f"role must be one of {[r.value for r in Role]}") from None
    return {"participant": identifier(fields["participant"], "participant"), "role": role.value}


def parse_participant_mute(fields: Mapping[str, Any], limits: RoomLimits) -> dict[str, Any]:
    """{participant, muted}. Requires the op's fields."""
    _expect(fields, {"participant", "muted"})
    if not isinstance(fields["muted"], bool):
        raise invalid("muted must be true or false")
    return {"participant": identifier(fields["participant"], "participant"), "muted": fields["muted"]}


def parse_participant_kick(fields: Mapping[str, Any], limits: RoomLimits) -> dict[str, Any]:
    """{participant}. Requires the op's fields."""
    _expect(fields, {"participant"})
    return {"participant": identifier(fields["participant"], "participant")}


MAX_GROW_RADIUS_MM = 1000.0


def parse_structure_grow(fields: Mapping[str, Any], limits: RoomLimits) -> dict[str, Any]:
    """{seed (LPS mm), name, low?, high?, max_radius_mm?, color?}: grow a structure from a point. Requires the
    op's fields."""
    _expect(fields, {"seed", "name"}, {"low", "high", "max_radius_mm", "color"})
    data: dict[str, Any] = {"seed": _lps(fields["seed"], "seed", limits)}
    name = text(fields["name"], "name", limits.max_label_length).strip()
    if not name:
        raise invalid("a structure needs a name")
    data["name"] = name
    for bound in ("low", "high"):
        if bound in fields:
            data[bound] = number(fields[bound], bound, -1e6, 1e6)
    if "low" in data and "high" in data and data["low"] > data["high"]:
        raise invalid("low must not be above high")
    if "max_radius_mm" in fields:
        data["max_radius_mm"] = number(fields["max_radius_mm"], "max_radius_mm", 1.0, MAX_GROW_RADIUS_MM)
    if "color" in fields:
        data["color"] = _color(fields["color"])
    return data


def parse_structure_style(fields: Mapping[str, Any], limits: RoomLimits) -> dict[str, Any]:
    """{mesh, visible?, opacity?, color?, version?}: how a structure of the room is shown to everyone. `mesh` is
    the structure's id ("<mesh id>:<segment number>"). Requires the op's fields."""
    _expect(fields, {"mesh"}, {"visible", "opacity", "color", "version"})
    data: dict[str, Any] = {"mesh": identifier(fields["mesh"], "mesh")}
    if "visible" in fields:
        if not isinstance(fields["visible"], bool):
            raise invalid("visible must be true or false")
        data["visible"] = fields["visible"]
    if "opacity" in fields:
        data["opacity"] = number(fields["opacity"], "opacity", 0.0, 1.0)
    if "color" in fields:
        data["color"] = _color(fields["color"])
    if len(data) == 1:
        raise invalid("structure.style needs visible, opacity or color")
    return {**data, **_version(fields)}

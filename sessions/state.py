"""The state of a room: participants, annotations, clip and slice planes, model transform, locks, follow-me, the
named structures (each shown or hidden, at an opacity and colour, for everyone) with the ones being grown, and
the talk rights (open mics, raised hands, allows: sessions/voice.py).

Two halves, so that live ops and log replay can never disagree:

- `prepare_<kind>(data, author, seq, limits)` checks an op against the current state (the object exists, the
  version is not stale, a room limit is not reached) and returns the event data, with server-computed values
  (ids, a measurement's length). It changes nothing; it raises OpError.
- `apply_<kind>(event)` changes the state, deterministically, from the event alone. It is used live (after the
  event is durable) and to replay a log after a restart, so the same events always give the same snapshot.

sessions/protocol.py says which of these each kind uses (`prepare`, `apply_event` dispatch on it).

Versions. Every object records the seq of the event that last changed it (`version`) and, per field, the seq
that last changed that field (`versions`). Last writer wins per (object, field); an op that carries
`version` v is refused as stale (with the current version, so the client can rebase) when a field it touches
changed after v. Fields it does not touch may have changed: concurrent edits of different fields merge.

The state shares values with the events it applied and never mutates them; snapshots are deep copies.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sessions import seats
from sessions.events import Event
from sessions.limits import RoomLimits
from sessions.ops import ANNOTATION_FIELDS, SLICE_FIELDS, AnnotationType, ErrorCode, OpError, OpKind, invalid
from sessions.roles import Role
from sessions.voice import VoiceState


class StateError(Exception):
    """An event cannot apply to the state: the log is out of order or corrupt."""


@dataclass(frozen=True)
class Participant:
    """Someone invited to the room. `present` follows join/leave; `kicked` participants cannot rejoin."""

    id: str
    name: str
    role: Role
    muted: bool = False
    present: bool = False
    kicked: bool = False
    seat: int = 0  # the index of their seat around the table (sessions/seats.py)

    def to_json(self) -> dict[str, Any]:
        """The participant as in a snapshot."""
        return {"id": self.id, "name": self.name, "role": self.role.value, "muted": self.muted,
                "present": self.present, "kicked": self.kicked, "seat": seats.seat(self.seat).to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Participant:
        """The participant of a snapshot entry. Requires a `to_json` dict."""
        return cls(data["id"], data["name"], Role(data["role"]), data["muted"], data["present"],
                   data["kicked"], data["seat"]["index"])


@dataclass(frozen=True)
class Annotation:
    """A mark on the patient. `fields` holds the type's fields (LPS mm positions, label, ...)."""

    id: str
    type: AnnotationType
    author: str
    layer: str
    fields: dict[str, Any]
    version: int
    versions: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        """The annotation as in a snapshot: {id, type, author, layer, ...fields, version, versions}."""
        return {"id": self.id, "type": self.type.value, "author": self.author, "layer": self.layer,
                **copy.deepcopy(self.fields), "version": self.version, "versions": dict(self.versions)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Annotation:
        """The annotation of a snapshot entry. Requires a `to_json` dict."""
        meta = {"id", "type", "author", "layer", "version", "versions"}
        fields = {key: copy.deepcopy(value) for key, value in data.items() if key not in meta}
        return cls(data["id"], AnnotationType(data["type"]), data["author"], data["layer"], fields,
                   data["version"], dict(data["versions"]))


@dataclass(frozen=True)
class ClipPlane:
    """A clip plane normal . x + constant = 0 in model space (glTF metres); the normal's side stays."""

    id: str
    normal: tuple[float, float, float]
    constant: float
    author: str
    version: int

    def to_json(self) -> dict[str, Any]:
        """The plane as in a snapshot."""
        return {"id": self.id, "normal": list(self.normal), "constant": self.constant,
                "author": self.author, "version": self.version}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClipPlane:
        """The plane of a snapshot entry. Requires a `to_json` dict."""
        return cls(data["id"], tuple(data["normal"]), data["constant"], data["author"], data["version"])


@dataclass(frozen=True)
class SlicePlane:
    """An image plane through the patient's series: `fields` holds SLICE_FIELDS (centre, directions and size in
    LPS mm, window and level in the image's units). Each field has its own version, like an annotation's."""

    id: str
    author: str
    fields: dict[str, Any]
    version: int
    versions: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        """The plane as in a snapshot: {id, author, ...fields, version, versions}."""
        return {"id": self.id, "author": self.author, **copy.deepcopy(self.fields), "version": self.version,
                "versions": dict(self.versions)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SlicePlane:
        """The plane of a snapshot entry. Requires a `to_json` dict."""
        fields = {name: copy.deepcopy(data[name]) for name in SLICE_FIELDS}
        return cls(data["id"], data["author"], fields, data["version"], dict(data["versions"]))


@dataclass(frozen=True)
class ModelTransform:
    """Where the model (the GLB's frame) sits in the room: position (m), quaternion [x,y,z,w], scale."""

    position: tuple[float, ...] = (0.0, 0.0, 0.0)
    quaternion: tuple[float, ...] = (0.0, 0.0, 0.0, 1.0)
    scale: float = 1.0
    version: int = 0
    versions: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The transform as in a snapshot."""
        return {"position": list(self.position), "quaternion": list(self.quaternion), "scale": self.scale,
                "version": self.version, "versions": dict(self.versions)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelTransform:
        """The transform of a snapshot entry. Requires a `to_json` dict."""
        return cls(tuple(data["position"]), tuple(data["quaternion"]), data["scale"], data["version"],
                   dict(data["versions"]))


MAX_GROWING = 4  # structures being grown in a room at once
STYLE_FIELDS = ("visible", "opacity", "color")


def structure_entry(data: Mapping[str, Any], version: int) -> dict[str, Any]:
    """A structure as the state keeps it: {id, mesh, name, color, volume_ml, visible, opacity, version,
    versions}. Requires {id, mesh, name, color, volume_ml}."""
    return {"id": data["id"], "mesh": data["mesh"], "name": data["name"], "color": data["color"],
            "volume_ml": data["volume_ml"], "visible": True, "opacity": 1.0, "version": version, "versions": {}}


def measure_mm(a: list[float], b: list[float]) -> float:
    """The distance between two LPS points in mm, rounded to 1e-6 mm. Requires two 3-vectors."""
    return round(math.dist(a, b), 6)


class RoomState:
    """Everything a room's log implies, built by applying its events in order (see the module docstring)."""

    def __init__(self) -> None:
        self.seq = 0
        self.room: dict[str, Any] = {}  # {id, **room.open data}: {id, mode, title, study, meshes}
        self.closed = False
        self.participants: dict[str, Participant] = {}
        self.annotations: dict[str, Annotation] = {}
        self.clips: dict[str, ClipPlane] = {}
        self.slices: dict[str, SlicePlane] = {}
        self.model = ModelTransform()
        self.locked = False
        self.joins_locked = False  # no one new may join (participants already known may come back)
        self.follow: str | None = None  # the participant everyone follows, if any
        self.structures: dict[str, dict[str, Any]] = {}  # id "<mesh>:<segment>" -> structure_entry
        self.growing: dict[str, dict[str, Any]] = {}  # request id -> {author, name}: structures being grown
        self.voice = VoiceState()  # open mics, raised hands, allows: sessions/voice.py

    # ---- queries -----------------------------------------------------------------------------------

    def participant(self, participant_id: str) -> Participant | None:
        """The participant `participant_id`, or None."""
        return self.participants.get(participant_id)

    def present(self) -> list[Participant]:
        """Participants currently in the room, in join order."""
        return [p for p in self.participants.values() if p.present]

    # ---- prepare: check an op, return the event data ------------------------------------------------

    def prepare_annotation_create(self, data: dict, author: str, seq: int, limits: RoomLimits) -> dict:
        """A new annotation in the author's layer. Requires a parsed annotation.create."""
        if len(self.annotations) >= limits.max_annotations:
            raise OpError(ErrorCode.LIMIT,
                          f"the room has the maximum of {limits.max_annotations} annotations")
        result = {"id": f"a{seq}", "layer": author, **data}
        if data["type"] == AnnotationType.MEASUREMENT:
            result["length_mm"] = measure_mm(data["a"], data["b"])
        return result

    def prepare_annotation_update(self, data: dict, author: str, seq: int, limits: RoomLimits) -> dict:
        """The changed fields (and a recomputed length). Requires a parsed annotation.update."""
        annotation = self._annotation(data["id"])
        changed = {key: value for key, value in data.items() if key not in ("id", "version")}
        allowed = ANNOTATION_FIELDS[annotation.type]
        for name, value in changed.items():
            if name not in allowed:
                raise invalid(f"a {annotation.type.value} annotation has no field {name!r}")
            if value is None and allowed[name]:
                raise invalid(f"{name} of a {annotation.type.value} annotation cannot be removed")
        _check_version(data, annotation.version, annotation.versions, changed, f"annotation {annotation.id}")
        result = {"id": annotation.id, **changed}
        if annotation.type == AnnotationType.MEASUREMENT and ("a" in changed or "b" in changed):
            a = changed.get("a", annotation.fields["a"])
            b = changed.get("b", annotation.fields["b"])
            result["length_mm"] = measure_mm(a, b)
        return result

    def prepare_annotation_delete(self, data: dict, author: str, seq: int, limits: RoomLimits) -> dict:
        """{id}. Requires a parsed annotation.delete."""
        annotation = self._annotation(data["id"])
        _check_version(data, annotation.version, {}, {}, f"annotation {annotation.id}")
        return {"id": annotation.id}

    def prepare_clip_set(self, data: dict, author: str, seq: int, limits: RoomLimits) -> dict:
        """{id, normal, constant}: a new plane, or a replaced one. Requires a parsed clip.set."""
        plane = {"normal": data["normal"], "constant": data["constant"]}
        if "id" in data:
            clip = self._clip(data["id"])
            _check_version(data, clip.version, {}, {}, f"clip plane {clip.id}")
            return {"id": clip.id, **plane}
        if len(self.clips) >= limits.max_clip_planes:
            raise OpError(ErrorCode.LIMIT,
                          f"the room has the maximum of {limits.max_clip_planes} clip planes")
        return {"id": f"c{seq}", **plane}

    def prepare_clip_clear(self, data: dict, author: str, seq: int, limits: RoomLimits) -> dict:
        """{id} of one existing plane, or {} for all. Requires a parsed clip.clear."""
        return {"id": self._clip(data["id"]).id} if "id" in data else {}

    def prepare_slice_set(self, data: dict, author: str, seq: int, limits: RoomLimits) -> dict:
        """{id, ...fields}: a new plane (every field), or the fields of an existing one that change.

        Requires a parsed slice.set (with every field when it has no id).
        """
        changed = {key: value for key, value in data.items() if key not in ("id", "version")}
        if "id" in data:
            plane = self._slice(data["id"])
            _check_version(data, plane.version, plane.versions, changed, f"slice plane {plane.id}")
            return {"id": plane.id, **changed}
        if len(self.slices) >= limits.max_slice_planes:
            raise OpError(ErrorCode.LIMIT, f"the room has the maximum of {limits.max_slice_planes} slice planes")
        return {"id": f"s{seq}", **changed}

    def prepare_slice_clear(self, data: dict, author: str, seq: int, limits: RoomLimits) -> dict:
        """{id} of one existing plane, or {} for all. Requires a parsed slice.clear."""
        return {"id": self._slice(data["id"]).id} if "id" in data else {}

    def prepare_model_transform(self, data: dict, author: str, seq: int, limits: RoomLimits) -> dict:
        """The changed transform fields. Requires a parsed model.transform."""
        changed = {key: value for key, value in data.items() if key != "version"}
        _check_version(data, self.model.version, self.model.versions, changed, "the model transform")
        return changed

    def prepare_as_is(self, data: dict, author: str, seq: int, limits: RoomLimits) -> dict:
        """The op's data unchanged (pointer, lock, follow). Requires a parsed op."""
        return dict(data)

    def prepare_participant_role(self, data: dict, author: str, seq: int, limits: RoomLimits) -> dict:
        """{participant, role}. Requires a parsed participant.role."""
        self._target(data["participant"], author, "change your own role")
        return dict(data)

    def prepare_participant_mute(self, data: dict, author: str, seq: int, limits: RoomLimits) -> dict:
        """{participant, muted}. Requires a parsed participant.mute."""
        target = self._target(data["participant"], author, "mute yourself")
        if target.role is Role.INSTRUCTOR:
            raise OpError(ErrorCode.FORBIDDEN, "instructors cannot be muted")
        return dict(data)

    def prepare_participant_kick(self, data: dict, author: str, seq: int, limits: RoomLimits) -> dict:
        """{participant}. Requires a parsed participant.kick."""
        target = self._target(data["participant"], author, "remove yourself")
        if target.role is Role.INSTRUCTOR:
            raise OpError(ErrorCode.FORBIDDEN, "instructors cannot be removed; change their role first")
        return dict(data)

    def prepare_structure_grow(self, data: dict, author: str, seq: int, limits: RoomLimits) -> dict:
        """{request, seed, name, ...}: a request the server grows as a job. Requires a parsed structure.grow."""
        if len(self.growing) >= MAX_GROWING:
            raise OpError(ErrorCode.LIMIT, f"{MAX_GROWING} structures are being grown already; wait for one")
        return {"request": f"g{seq}", **data}

    def prepare_structure_style(self, data: dict, author: str, seq: int, limits: RoomLimits) -> dict:
        """The changed style fields of an existing structure. Requires a parsed structure.style."""
        structure = self.structures.get(data["mesh"])
        if structure is None:
            raise OpError(ErrorCode.NOT_FOUND, f"no structure {data['mesh']!r} in the room")
        changed = {key: value for key, value in data.items() if key in STYLE_FIELDS}
        _check_version(data, structure["version"], structure["versions"], changed, f"structure {data['mesh']}")
        return {"mesh": data["mesh"], **changed}

    def _annotation(self, annotation_id: str) -> Annotation:
        """The annotation `annotation_id`, or a not_found OpError."""
        annotation = self.annotations.get(annotation_id)
        if annotation is None:
            raise OpError(ErrorCode.NOT_FOUND, f"no annotation {annotation_id!r}")
        return annotation

    def _clip(self, clip_id: str) -> ClipPlane:
        """The clip plane `clip_id`, or a not_found OpError."""
        clip = self.clips.get(clip_id)
        if clip is None:
            raise OpError(ErrorCode.NOT_FOUND, f"no clip plane {clip_id!r}")
        return clip

    def _slice(self, slice_id: str) -> SlicePlane:
        """The slice plane `slice_id`, or a not_found OpError."""
        plane = self.slices.get(slice_id)
        if plane is None:
            raise OpError(ErrorCode.NOT_FOUND, f"no slice plane {slice_id!r}")
        return plane

    def _target(self, participant_id: str, author: str, self_action: str) -> Participant:
        """The participant an op targets: known, not kicked, not the author."""
        target = self.participants.get(participant_id)
        if target is None or target.kicked:
            raise OpError(ErrorCode.NOT_FOUND, f"no participant {participant_id!r} in the room")
        if participant_id == author:
            raise invalid(f"you cannot {self_action}")
        return target

    # ---- apply: the deterministic change -----------------------------------------------------------

    def apply_room_open(self, event: Event) -> None:
        """Record the room's id and description, and the structures of its meshes. Requires the first event."""
        data = copy.deepcopy(event.data)
        for structure in data.pop("structures", []):
            self.structures[structure["id"]] = structure_entry(structure, event.seq)
        self.room = {"id": event.room, **data}

    def apply_structure_grow(self, event: Event) -> None:
        """A structure is being grown."""
        self.growing[event.data["request"]] = {"author": event.author, "name": event.data["name"]}

    def apply_structure_add(self, event: Event) -> None:
        """A grown structure is ready: it joins the room's structures, shown."""
        self.growing.pop(event.data.get("request", ""), None)
        self.structures[event.data["id"]] = structure_entry(event.data, event.seq)

    def apply_structure_fail(self, event: Event) -> None:
        """A structure could not be grown."""
        self.growing.pop(event.data["request"], None)

    def apply_structure_style(self, event: Event) -> None:
        """Change how a structure is shown (last writer wins per field)."""
        structure = self.structures[event.data["mesh"]]
        changed = {key: value for key, value in event.data.items() if key in STYLE_FIELDS}
        self.structures[structure["id"]] = {**structure, **changed, "version": event.seq,
                                            "versions": {**structure["versions"], **dict.fromkeys(changed, event.seq)}}

    def apply_room_close(self, event: Event) -> None:
        """Close the room: everyone leaves, follow-me ends."""
        self.closed = True
        self.follow = None
        for participant_id, participant in self.participants.items():
            self.participants[participant_id] = replace(participant, present=False)

    def apply_participant_join(self, event: Event) -> None:
        """Add or return a participant, with the role the room decided."""
        data = event.data
        known = self.participants.get(data["participant"])
        role = Role(data["role"])
        seat = data["seat"]["index"] if "seat" in data else self.seat_for(data["participant"])
        if known is None:
            self.participants[data["participant"]] = Participant(data["participant"], data["name"], role,
                                                                 present=True, seat=seat)
        else:
            self.participants[known.id] = replace(known, name=data["name"], role=role, present=True, seat=seat)

    def seat_for(self, participant_id: str) -> int:
        """The seat `participant_id` gets on joining now: their last one unless someone present holds it, else the
        lowest free one (logs written before seats were logged get theirs this way too)."""
        known = self.participants.get(participant_id)
        return seats.assign(known.seat if known is not None else None, {p.seat for p in self.present()})

    def apply_participant_leave(self, event: Event) -> None:
        """Mark a participant absent; a leaving leader ends follow-me."""
        self._absent(event.data["participant"])

    def apply_annotation_create(self, event: Event) -> None:
        """Add the annotation, every field at this seq."""
        data = event.data
        fields = {key: value for key, value in data.items() if key not in ("id", "type", "layer")}
        self.annotations[data["id"]] = Annotation(
            data["id"], AnnotationType(data["type"]), event.author, data["layer"], fields,
            event.seq, dict.fromkeys(fields, event.seq),
        )

    def apply_annotation_update(self, event: Event) -> None:
        """Overwrite the changed fields (a null position removes it)."""
        annotation = self.annotations[event.data["id"]]
        changed = {key: value for key, value in event.data.items() if key != "id"}
        fields = {**annotation.fields, **changed}
        fields = {key: value for key, value in fields.items() if value is not None}
        versions = {**annotation.versions, **dict.fromkeys(changed, event.seq)}
        self.annotations[annotation.id] = replace(annotation, fields=fields, version=event.seq,
                                                  versions=versions)

    def apply_annotation_delete(self, event: Event) -> None:
        """Remove the annotation."""
        del self.annotations[event.data["id"]]

    def apply_clip_set(self, event: Event) -> None:
        """Add or replace the plane."""
        data = event.data
        self.clips[data["id"]] = ClipPlane(data["id"], tuple(data["normal"]), data["constant"], event.author,
                                           event.seq)

    def apply_clip_clear(self, event: Event) -> None:
        """Remove one plane, or all."""
        if "id" in event.data:
            del self.clips[event.data["id"]]
        else:
            self.clips.clear()

    def apply_slice_set(self, event: Event) -> None:
        """Add a plane, or overwrite the changed fields of one."""
        data = event.data
        changed = {key: value for key, value in data.items() if key != "id"}
        plane = self.slices.get(data["id"])
        if plane is None:
            self.slices[data["id"]] = SlicePlane(data["id"], event.author, changed, event.seq,
                                                 dict.fromkeys(changed, event.seq))
        else:
            self.slices[plane.id] = replace(plane, fields={**plane.fields, **changed}, version=event.seq,
                                            versions={**plane.versions, **dict.fromkeys(changed, event.seq)})

    def apply_slice_clear(self, event: Event) -> None:
        """Remove one plane, or all."""
        if "id" in event.data:
            del self.slices[event.data["id"]]
        else:
            self.slices.clear()

    def apply_model_transform(self, event: Event) -> None:
        """Overwrite the changed transform fields."""
        data = event.data
        model = self.model
        self.model = ModelTransform(
            tuple(data.get("position", model.position)), tuple(data.get("quaternion", model.quaternion)),
            data.get("scale", model.scale), event.seq, {**model.versions, **dict.fromkeys(data, event.seq)},
        )

    def apply_nothing(self, event: Event) -> None:
        """A pointer highlight, or a mesh's provenance, is history, not state."""

    def apply_lock(self, event: Event) -> None:
        """Lock or unlock the model."""
        self.locked = event.kind == OpKind.ROOM_LOCK

    def apply_joins_lock(self, event: Event) -> None:
        """Lock or unlock the room against new joins."""
        self.joins_locked = event.kind == OpKind.ROOM_LOCK_JOINS

    def apply_participant_role(self, event: Event) -> None:
        """Change a role; an instructor is never muted, and only an instructor leads follow-me."""
        target = self.participants[event.data["participant"]]
        role = Role(event.data["role"])
        muted = target.muted and role is not Role.INSTRUCTOR
        self.participants[target.id] = replace(target, role=role, muted=muted)
        if self.follow == target.id and role is not Role.INSTRUCTOR:
            self.follow = None

    def apply_participant_mute(self, event: Event) -> None:
        """Mute or unmute a participant's tools."""
        target = self.participants[event.data["participant"]]
        self.participants[target.id] = replace(target, muted=event.data["muted"])

    def apply_participant_kick(self, event: Event) -> None:
        """Remove a participant for good."""
        target = self.participants[event.data["participant"]]
        self.participants[target.id] = replace(target, kicked=True)
        self._absent(target.id)

    def apply_follow(self, event: Event) -> None:
        """Start (the author leads) or stop follow-me."""
        self.follow = event.author if event.kind == OpKind.FOLLOW_START else None

    def _absent(self, participant_id: str) -> None:
        """Mark `participant_id` absent and end follow-me if they led it. Requires a known participant."""
        self.participants[participant_id] = replace(self.participants[participant_id], present=False)
        if self.follow == participant_id:
            self.follow = None

    # ---- snapshots ---------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain JSON-able data: {room, participants, state, seq}. A fresh copy."""
        return {
            "room": {**copy.deepcopy(self.room), "closed": self.closed},
            "participants": {participant_id: p.to_json() for participant_id, p in self.participants.items()},
            "state": {
                "annotations": {aid: a.to_json() for aid, a in self.annotations.items()},
                "clips": {cid: c.to_json() for cid, c in self.clips.items()},
                "slices": {sid: plane.to_json() for sid, plane in self.slices.items()},
                "model": self.model.to_json(),
                "locks": {"model": self.locked, "joins": self.joins_locked},
                "follow": self.follow,
                "structures": copy.deepcopy(self.structures),
                "growing": copy.deepcopy(self.growing),
                "voice": self.voice.to_json(),
            },
            "seq": self.seq,
        }

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> RoomState:
        """The state a snapshot describes (extra keys such as `you` and `head` are ignored).

        Requires a snapshot made by `snapshot()` or `Room.snapshot_for`.
        """
        state = cls()
        room = dict(snapshot["room"])
        state.closed = room.pop("closed")
        state.room = copy.deepcopy(room)
        state.participants = {key: Participant.from_json(p) for key, p in snapshot["participants"].items()}
        body = snapshot["state"]
        state.annotations = {aid: Annotation.from_json(a) for aid, a in body["annotations"].items()}
        state.clips = {cid: ClipPlane.from_json(c) for cid, c in body["clips"].items()}
        state.slices = {sid: SlicePlane.from_json(plane) for sid, plane in body.get("slices", {}).items()}
        state.model = ModelTransform.from_json(body["model"])
        state.locked = body["locks"]["model"]
        state.joins_locked = body["locks"].get("joins", False)
        state.follow = body["follow"]
        state.structures = copy.deepcopy(body.get("structures", {}))
        state.growing = copy.deepcopy(body.get("growing", {}))
        state.voice = VoiceState.from_json(body.get("voice"))
        state.seq = snapshot["seq"]
        return state


def _check_version(data: Mapping[str, Any], version: int, versions: Mapping[str, int],
                   changed: Mapping[str, Any], what: str) -> None:
    """Refuse an op whose `version` is older than a field it changes (or the object, if `changed` is empty).

    Requires the object's `version` and per-field `versions`; an op without `version` always passes.
    """
    if "version" not in data:
        return
    seen = data["version"]
    touched = [versions.get(name, 0) for name in changed] if changed else [version]
    if any(changed_at > seen for changed_at in touched):
        raise OpError(ErrorCode.STALE_VERSION,
                      f"{what} changed after version {seen}; it is now at version {version}", version)

"""RoomState: versions and last-writer-wins per field, measurements in LPS, determinism, snapshots."""

from __future__ import annotations

import contextlib
import math
import random

import pytest
from rooms import Clock, new_room, point

from sessions.events import Event
from sessions.ops import ErrorCode, OpError
from sessions.protocol import apply_event
from sessions.replay import state_at
from sessions.roles import Role
from sessions.state import RoomState, StateError, measure_mm

PEOPLE = {"ines": Role.INSTRUCTOR, "sam": Role.SURGEON, "stu": Role.STUDENT}


def test_a_stale_update_is_refused_with_the_current_version():
    room = new_room(PEOPLE)
    created = room.apply(point(label="apex"), "sam", 1)
    version = created.seq
    moved = room.apply({"kind": "annotation.update", "id": created.data["id"], "version": version,
                        "position": [5, 5, 5]}, "ines", 2)
    with pytest.raises(OpError) as stale:
        room.apply({"kind": "annotation.update", "id": created.data["id"], "version": version,
                    "position": [7, 7, 7]}, "sam", 3)
    assert stale.value.code is ErrorCode.STALE_VERSION
    assert stale.value.version == moved.seq
    assert stale.value.to_json() == {"code": "stale_version", "detail": stale.value.detail,
                                     "version": moved.seq}
    # The client rebases on the version it was given, and wins.
    rebased = room.apply({"kind": "annotation.update", "id": created.data["id"],
                          "version": stale.value.version, "position": [7, 7, 7]}, "sam", 4)
    annotation = room.state.annotations[created.data["id"]]
    assert annotation.fields["position"] == [7.0, 7.0, 7.0]
    assert annotation.version == rebased.seq


def test_concurrent_edits_of_different_fields_merge_and_without_version_the_last_writer_wins():
    room = new_room(PEOPLE)
    aid = room.apply(point(label="apex"), "sam", 1).data["id"]
    base = room.seq
    room.apply({"kind": "annotation.update", "id": aid, "version": base, "position": [4, 4, 4]}, "ines", 2)
    room.apply({"kind": "annotation.update", "id": aid, "version": base, "label": "base of skull"}, "sam", 3)
    room.apply({"kind": "annotation.update", "id": aid, "label": "last"}, "ines", 4)  # no version: LWW
    snapshot = room.snapshot_for("sam")["state"]["annotations"][aid]
    assert (snapshot["position"], snapshot["label"]) == ([4.0, 4.0, 4.0], "last")
    assert snapshot["versions"]["position"] == base + 1
    assert snapshot["versions"]["label"] == room.seq == snapshot["version"]


def test_a_stale_delete_is_refused_and_a_current_one_accepted():
    room = new_room(PEOPLE)
    aid = room.apply(point(), "sam", 1).data["id"]
    seen = room.seq
    room.apply({"kind": "annotation.update", "id": aid, "label": "moved on"}, "ines", 2)
    with pytest.raises(OpError) as stale:
        room.apply({"kind": "annotation.delete", "id": aid, "version": seen}, "sam", 3)
    assert (stale.value.code, stale.value.version) == (ErrorCode.STALE_VERSION, room.seq)
    room.apply({"kind": "annotation.delete", "id": aid, "version": room.seq}, "sam", 4)
    assert aid not in room.state.annotations


@pytest.mark.parametrize(("a", "b", "length"), [
    ([0, 0, 0], [3, 4, 12], 13.0),
    ([-10.5, 20.25, 100.0], [-10.5, 20.25, 100.0], 0.0),
    ([1, 2, 3], [1, 2, -97], 100.0),
    ([-250.0, 0.0, 0.0], [250.0, 0.0, 0.0], 500.0),
])
def test_measurements_are_computed_by_the_server_in_lps_mm(a, b, length):
    room = new_room(PEOPLE)
    event = room.apply({"kind": "annotation.create", "type": "measurement", "a": a, "b": b}, "stu", 1)
    assert event.data["length_mm"] == length
    assert room.state.annotations[event.data["id"]].fields["length_mm"] == length


def test_moving_a_measurement_end_recomputes_its_length():
    room = new_room(PEOPLE)
    aid = room.apply({"kind": "annotation.create", "type": "measurement", "a": [0, 0, 0], "b": [3, 4, 12]},
                     "stu", 1).data["id"]
    event = room.apply({"kind": "annotation.update", "id": aid, "b": [0, 0, 20]}, "stu", 2)
    assert event.data["length_mm"] == 20.0
    fields = room.state.annotations[aid].fields
    assert (fields["a"], fields["b"], fields["length_mm"]) == ([0.0, 0.0, 0.0], [0.0, 0.0, 20.0], 20.0)


def test_a_client_cannot_send_a_length():
    room = new_room(PEOPLE)
    with pytest.raises(OpError) as refused:
        room.apply({"kind": "annotation.create", "type": "measurement", "a": [0, 0, 0], "b": [1, 0, 0],
                    "length_mm": 99.0}, "stu", 1)
    assert refused.value.code is ErrorCode.INVALID and "length_mm" in refused.value.detail


def test_measure_mm_matches_euclid():
    rng = random.Random(7)
    for _ in range(100):
        a = [rng.uniform(-500, 500) for _ in range(3)]
        b = [rng.uniform(-500, 500) for _ in range(3)]
        euclid = math.sqrt(sum((p - q) ** 2 for p, q in zip(a, b, strict=True)))
        assert measure_mm(a, b) == pytest.approx(euclid, abs=1e-6)


def test_field_rules_per_annotation_type():
    room = new_room(PEOPLE)
    note = room.apply({"kind": "annotation.create", "type": "note", "text": "watch the\nfacial nerve",
                       "position": [1, 2, 3]}, "sam", 1).data["id"]
    pin = room.apply(point(), "sam", 2).data["id"]
    room.apply({"kind": "annotation.update", "id": note, "position": None}, "sam", 3)  # detach the note
    assert "position" not in room.state.annotations[note].fields
    for message in ({"id": pin, "position": None}, {"id": pin, "text": "x"}, {"id": note, "label": "x"},
                    {"id": pin, "type": "note"}, {"id": pin}):
        with pytest.raises(OpError) as refused:
            room.apply({"kind": "annotation.update", **message}, "sam", 4)
        assert refused.value.code is ErrorCode.INVALID, message
    with pytest.raises(OpError) as missing:
        room.apply({"kind": "annotation.update", "id": "a999", "label": "x"}, "sam", 5)
    assert missing.value.code is ErrorCode.NOT_FOUND


def test_clip_planes_are_created_replaced_cleared_and_limited():
    room = new_room(PEOPLE)
    first = room.apply({"kind": "clip.set", "plane": {"point": [0, 0.1, 0], "normal": [0, 2, 0]}}, "sam", 1)
    assert (first.data["normal"], first.data["constant"]) == ([0.0, 1.0, 0.0], -0.1)
    cid = first.data["id"]
    room.apply({"kind": "clip.set", "id": cid, "version": first.seq,
                "plane": {"normal": [1, 0, 0], "constant": 0.2}}, "ines", 2)
    assert room.state.clips[cid].normal == (1.0, 0.0, 0.0)
    with pytest.raises(OpError) as stale:
        room.apply({"kind": "clip.set", "id": cid, "version": first.seq,
                    "plane": {"normal": [0, 0, 1], "constant": 0}}, "sam", 3)
    assert (stale.value.code, stale.value.version) == (ErrorCode.STALE_VERSION, first.seq + 1)
    for _ in range(room.limits.max_clip_planes - 1):
        room.apply({"kind": "clip.set", "plane": {"normal": [0, 0, 1], "constant": 0}}, "sam", 4)
    with pytest.raises(OpError) as full:
        room.apply({"kind": "clip.set", "plane": {"normal": [0, 0, 1], "constant": 0}}, "sam", 5)
    assert full.value.code is ErrorCode.LIMIT
    room.apply({"kind": "clip.clear", "id": cid}, "sam", 6)
    assert cid not in room.state.clips and len(room.state.clips) == room.limits.max_clip_planes - 1
    room.apply({"kind": "clip.clear"}, "sam", 7)
    assert room.state.clips == {}


AXIAL = {"kind": "slice.set", "origin": [0, 10, 40], "u": [1, 0, 0], "v": [0, 1, 0], "width_mm": 240,
         "height_mm": 200, "window": 1800, "level": 400}


def test_slice_planes_are_created_moved_cleared_and_limited_to_three():
    room = new_room(PEOPLE)
    first = room.apply(AXIAL, "sam", 1)
    sid = first.data["id"]
    assert sid == f"s{first.seq}"
    assert first.data == {"id": sid, "origin": [0.0, 10.0, 40.0], "u": [1.0, 0.0, 0.0], "v": [0.0, 1.0, 0.0],
                          "width_mm": 240.0, "height_mm": 200.0, "window": 1800.0, "level": 400.0}
    # Moving the plane and changing its window are different fields: both apply, each with its version.
    room.apply({"kind": "slice.set", "id": sid, "version": first.seq, "origin": [0, 10, 45]}, "ines", 2)
    room.apply({"kind": "slice.set", "id": sid, "version": first.seq, "window": 80, "level": 40}, "sam", 3)
    with pytest.raises(OpError) as stale:
        room.apply({"kind": "slice.set", "id": sid, "version": first.seq, "origin": [0, 0, 0]}, "sam", 4)
    assert (stale.value.code, stale.value.version) == (ErrorCode.STALE_VERSION, room.seq)
    plane = room.state.slices[sid].to_json()
    assert (plane["origin"], plane["window"], plane["level"], plane["author"]) == ([0.0, 10.0, 45.0], 80.0, 40.0,
                                                                                    "sam")
    assert plane["versions"]["origin"] == first.seq + 1 and plane["versions"]["window"] == first.seq + 2
    for _ in range(room.limits.max_slice_planes - 1):
        room.apply(AXIAL, "ines", 5)
    with pytest.raises(OpError) as full:
        room.apply(AXIAL, "sam", 6)
    assert (full.value.code, full.value.detail) == (ErrorCode.LIMIT, "the room has the maximum of 3 slice planes")
    with pytest.raises(OpError) as gone:
        room.apply({"kind": "slice.set", "id": "s999", "level": 0}, "sam", 7)
    assert gone.value.code is ErrorCode.NOT_FOUND
    room.apply({"kind": "slice.clear", "id": sid}, "sam", 8)
    assert sid not in room.state.slices and len(room.state.slices) == 2
    room.apply({"kind": "slice.clear"}, "ines", 9)
    assert room.state.slices == {}


def test_slice_directions_are_normalised_and_must_be_orthogonal():
    room = new_room(PEOPLE)
    event = room.apply({**AXIAL, "u": [2, 0, 0], "v": [0, 3, 0.0006]}, "sam", 1)
    u, v = event.data["u"], event.data["v"]
    assert u == [1.0, 0.0, 0.0] and math.hypot(*v) == pytest.approx(1.0) and v[2] == pytest.approx(0.0002, abs=1e-9)
    for change, words in (({"v": [0.1, 1, 0]}, "orthogonal"), ({"v": [1, 0, 0]}, "orthogonal"),
                          ({"u": [0, 0, 0]}, "zero vector"), ({"width_mm": 0}, "width_mm must be positive"),
                          ({"height_mm": 20_000}, "height_mm"), ({"window": -1}, "window"),
                          ({"origin": [0, 0, 1e9]}, "origin"), ({"level": math.nan}, "level")):
        with pytest.raises(OpError, match=words) as refused:
            room.apply({**AXIAL, **change}, "sam", 2)
        assert refused.value.code is ErrorCode.INVALID
    for message, words in (({key: value for key, value in AXIAL.items() if key != "window"}, "missing field 'window'"),
                           ({"kind": "slice.set", "id": "s2", "u": [1, 0, 0]}, "u and v change together"),
                           ({"kind": "slice.set", "id": "s2"}, "at least one field"),
                           ({**AXIAL, "px": 128}, "unknown field 'px'")):
        with pytest.raises(OpError, match=words):
            room.apply(message, "sam", 3)


def test_model_transform_merges_fields_with_per_field_versions():
    room = new_room(PEOPLE)
    moved = room.apply({"kind": "model.transform", "position": [0, 1, -1]}, "sam", 1)
    room.apply({"kind": "model.transform", "scale": 2, "version": 0}, "ines", 2)  # other field: merges
    with pytest.raises(OpError) as stale:
        room.apply({"kind": "model.transform", "position": [0, 0, 0], "version": 0}, "ines", 3)
    assert (stale.value.code, stale.value.version) == (ErrorCode.STALE_VERSION, moved.seq + 1)
    room.apply({"kind": "model.transform", "quaternion": [0, 0.7071, 0, 0.7071]}, "sam", 4)
    model = room.state.model
    assert model.position == (0.0, 1.0, -1.0) and model.scale == 2.0
    assert model.quaternion == pytest.approx((0, math.sqrt(0.5), 0, math.sqrt(0.5)))
    assert model.versions == {"position": moved.seq, "scale": moved.seq + 1, "quaternion": room.seq}


def _busy_room(seed: int):
    """A room after a random mix of ops by three people (refused ops are simply skipped)."""
    rng = random.Random(seed)
    clock = Clock()
    room = new_room(PEOPLE, clock=clock)
    for _ in range(300):
        pid = rng.choice(list(PEOPLE))
        ids = sorted(room.state.annotations)
        choice = rng.random()
        if choice < 0.4 or not ids:
            message = point(rng.uniform(-100, 100), label=rng.choice(["", "apex", "sinus"]))
        elif choice < 0.7:
            message = {"kind": "annotation.update", "id": rng.choice(ids), "label": f"l{rng.randrange(9)}",
                       "version": max(0, room.seq - rng.randrange(5))}
        elif choice < 0.8:
            message = {"kind": "annotation.delete", "id": rng.choice(ids)}
        elif choice < 0.85:
            message = {"kind": "model.transform", "position": [rng.uniform(-1, 1), 1, 0]}
        elif choice < 0.9:
            planes = sorted(room.state.slices)
            message = ({"kind": "slice.set", "id": rng.choice(planes), "origin": [0, 0, rng.uniform(-50, 50)]}
                       if planes and rng.random() < 0.7 else AXIAL)
        else:
            message = {"kind": rng.choice(["room.lock", "room.unlock", "follow.start", "follow.stop"])}
        with contextlib.suppress(OpError):
            room.apply(message, pid, clock())
    return room


def test_the_same_events_give_the_same_state():
    room = _busy_room(seed=3)
    events = room.events_since(0)
    assert len(events) == room.seq > 100
    one, two = RoomState(), RoomState()
    for event in events:
        apply_event(one, event)
    for event in events:
        apply_event(two, Event.from_leaf(event.leaf()))  # as a client that received the bytes would
    assert one.snapshot() == two.snapshot() == room.state.snapshot()


def test_a_snapshot_plus_the_later_events_equals_the_full_replay():
    room = _busy_room(seed=11)
    events = room.events_since(0)
    middle = len(events) // 2
    partial = state_at(events, middle)
    resumed = RoomState.from_snapshot(partial.snapshot())
    for event in events[middle:]:
        apply_event(resumed, event)
    assert resumed.snapshot() == room.state.snapshot()
    # A client's wire snapshot (with `you` and `head`) restores too.
    assert RoomState.from_snapshot(room.snapshot_for("stu")).snapshot() == room.state.snapshot()


def test_events_out_of_order_are_refused():
    room = _busy_room(seed=5)
    events = room.events_since(0)
    state = RoomState()
    apply_event(state, events[0])
    with pytest.raises(StateError):
        apply_event(state, events[2])
    with pytest.raises(StateError):
        apply_event(state, events[0])


def test_follow_me_ends_when_the_leader_leaves_or_is_demoted():
    room = new_room({**PEOPLE, "ivo": Role.INSTRUCTOR})
    room.apply({"kind": "follow.start"}, "ines", 1)
    assert room.state.follow == "ines"
    room.apply({"kind": "participant.role", "participant": "ines", "role": "surgeon"}, "ivo", 2)
    assert room.state.follow is None
    room.apply({"kind": "follow.start"}, "ivo", 3)
    room.leave("ivo", 4, "disconnected")
    assert room.state.follow is None

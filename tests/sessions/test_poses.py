"""Poses: validation, the 30 Hz cap, batched frames per tick, expiry, and the 2 Hz track."""

from __future__ import annotations

import itertools
import math

import pytest

from sessions.ops import OpError
from sessions.poses import PoseHub, PoseLimits, parse_pose

IDENTITY = [0, 0, 0, 1]
HEAD = {"position": [0.1, 1.6, 0.4], "quaternion": IDENTITY}


def _pose(y: float = 1.6) -> dict:
    return {"head": {"position": [0.1, y, 0.4], "quaternion": IDENTITY}}


@pytest.mark.parametrize("message", [
    None,
    [],
    {},
    {"left": HEAD},
    {"head": HEAD, "middle": HEAD},
    {"head": HEAD, "t": 5},
    {"head": {"position": [0, 1, 0]}},
    {"head": {**HEAD, "scale": 1}},
    {"head": {"position": [0, float("nan"), 0], "quaternion": IDENTITY}},
    {"head": {"position": [0, float("inf"), 0], "quaternion": IDENTITY}},
    {"head": {"position": [0, 1, 1e4], "quaternion": IDENTITY}},
    {"head": {"position": [0, 1], "quaternion": IDENTITY}},
    {"head": {"position": [0, True, 0], "quaternion": IDENTITY}},
    {"head": {"position": [0, 1, 0], "quaternion": [0, 0, 0, 0]}},
    {"head": {"position": [0, 1, 0], "quaternion": [0, 0, 0, 0.5]}},
    {"head": {"position": [0, 1, 0], "quaternion": [0, 0, 1]}},
    {"head": HEAD, "right": {"position": "here", "quaternion": IDENTITY}},
])
def test_malformed_poses_are_refused(message):
    with pytest.raises(OpError):
        parse_pose(message, PoseLimits())


def test_a_pose_is_normalised_and_rounded():
    half = math.sqrt(0.5)
    pose = parse_pose({"head": {"position": [0.123456, 1.6, -0.00004], "quaternion": [0, 0, 1.02, 0]},
                       "right": {"position": [0.3, 1.2, 0.2], "quaternion": [half, 0, 0, half]},
                       "left": None}, PoseLimits())
    assert pose.head.position == (0.1235, 1.6, -0.0)
    assert pose.head.quaternion == (0.0, 0.0, 1.0, 0.0)
    assert pose.left is None
    assert pose.to_json() == {
        "head": {"position": [0.1235, 1.6, -0.0], "quaternion": [0.0, 0.0, 1.0, 0.0]},
        "right": {"position": [0.3, 1.2, 0.2], "quaternion": [0.7071, 0.0, 0.0, 0.7071]},
    }


def test_poses_beyond_30_hz_are_dropped():
    hub = PoseHub()
    at_30 = [hub.receive("a", _pose(), i / 30) for i in range(300)]
    assert all(at_30)
    at_90 = sum(hub.receive("b", _pose(), i / 90) for i in range(900))  # 10 s at 90 Hz
    assert at_90 == pytest.approx(300, abs=10)
    assert hub.receive("c", _pose(), 0.0)  # one participant's flood does not starve another


def test_jittery_30_hz_is_not_dropped():
    hub = PoseHub()
    times = [i / 30 + (0.012 if i % 2 else -0.012) for i in range(1, 300)]
    assert all(hub.receive("a", _pose(), t) for t in times)


def test_each_tick_batches_what_changed_since_the_last():
    hub = PoseHub()
    assert hub.tick(0.0) is None
    hub.receive("b", _pose(1.5), 0.01)
    hub.receive("a", _pose(1.7), 0.02)
    hub.receive("a", _pose(1.8), 0.04)
    frame = hub.tick(0.05)
    assert list(frame["poses"]) == ["a", "b"] and frame["gone"] == []
    assert frame["poses"]["a"]["head"]["position"] == [0.1, 1.8, 0.4]  # only the latest
    assert hub.tick(0.10) is None
    hub.receive("b", _pose(1.4), 0.12)
    assert list(hub.tick(0.15)["poses"]) == ["b"]
    assert set(hub.latest()) == {"a", "b"}


def test_avatars_expire_after_10_s_of_silence_or_on_remove():
    hub = PoseHub()
    hub.receive("a", _pose(), 0.0)
    hub.receive("b", _pose(), 0.0)
    hub.tick(0.05)
    hub.receive("b", _pose(), 5.0)
    hub.tick(5.05)
    assert hub.tick(9.9) is None
    assert hub.tick(10.0) == {"poses": {}, "gone": ["a"]}
    assert set(hub.latest()) == {"b"}
    hub.remove("b")
    assert hub.tick(10.05) == {"poses": {}, "gone": ["b"]}
    assert hub.latest() == {} and hub.tick(20.0) is None
    hub.remove("nobody")
    assert hub.tick(20.05) is None
    # A participant who comes back is live again.
    hub.receive("a", _pose(), 30.0)
    assert list(hub.tick(30.05)["poses"]) == ["a"]


def test_a_pose_after_remove_within_one_tick_cancels_the_gone():
    hub = PoseHub()
    hub.receive("a", _pose(), 0.0)
    hub.tick(0.05)
    hub.remove("a")
    hub.receive("a", _pose(1.2), 0.06)
    frame = hub.tick(0.1)
    assert frame == {"poses": {"a": parse_pose(_pose(1.2), PoseLimits()).to_json()}, "gone": []}


def test_the_track_is_downsampled_to_2_hz():
    hub = PoseHub()
    for i in range(150):  # 5 s at 30 Hz
        hub.receive("a", _pose(1.0 + i / 1000), i / 30)
    samples = hub.drain_track()
    assert len(samples) == 10
    assert all(s.participant == "a" for s in samples)
    gaps = [later.time - earlier.time for earlier, later in itertools.pairwise(samples)]
    assert all(0.5 <= gap < 0.55 for gap in gaps)
    assert hub.drain_track() == []


def test_pose_limits_are_configurable():
    hub = PoseHub(PoseLimits(max_metres=2.0, rate_hz=10, burst=1, expire_s=1.0))
    with pytest.raises(OpError):
        hub.receive("a", {"head": {"position": [0, 3, 0], "quaternion": IDENTITY}}, 0.0)
    assert hub.receive("a", _pose(1.0), 0.0) is False  # the malformed pose used the only token
    assert hub.receive("a", _pose(1.0), 0.1) is True
    assert hub.tick(1.1) == {"poses": {}, "gone": ["a"]}

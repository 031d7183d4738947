"""Poses: where each participant's head and controllers are. Presence, not history.

Clients send `pose` messages (volatile, up to 30 Hz): {head, left?, right?}, each {position [x, y, z],
quaternion [x, y, z, w]} in model space (glTF metres, +Y up, the GLB's frame). `parse_pose` validates one
(finite, bounded, unit-ish quaternion; normalised and rounded to 0.1 mm / 1e-4).

A `PoseHub` per room keeps each participant's latest pose, drops what exceeds the rate, and on each server
tick (~20 Hz) produces one batched frame of what changed and who is gone. An avatar is gone 10 s after its
last pose, or when the server calls `remove` on disconnect. A ~2 Hz downsampled track is kept for replay and
drained by the server (it is not part of the Merkle log).

Pure: every method takes `now` in seconds on a clock that never goes backwards (time.monotonic()).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sessions.limits import RateLimiter
from sessions.ops import invalid, quaternion, vector

PARTS = ("head", "left", "right")
_PART_SET = frozenset(PARTS)
_TRANSFORM_KEYS = frozenset({"position", "quaternion"})


@dataclass(frozen=True)
class PoseLimits:
    """Pose validation and pacing. Defaults follow the protocol (<= 30 Hz in, 10 s expiry, 2 Hz track)."""

    max_metres: float = 100.0  # |x|, |y|, |z| of a position
    rate_hz: float = 30.0  # poses accepted per participant per second, sustained
    burst: float = 5.0  # tolerance for network jitter
    expire_s: float = 10.0
    track_hz: float = 2.0
    max_track: int = 100_000  # samples kept until drained; the oldest are dropped beyond this


@dataclass(frozen=True)
class Transform:
    """A position (m) and a unit quaternion [x, y, z, w] in model space."""

    position: tuple[float, float, float]
    quaternion: tuple[float, float, float, float]

    def to_json(self) -> dict[str, list[float]]:
        """{position, quaternion}."""
        return {"position": list(self.position), "quaternion": list(self.quaternion)}


@dataclass(frozen=True)
class Pose:
    """A head and up to two controllers."""

    head: Transform
    left: Transform | None = None
    right: Transform | None = None

    def to_json(self) -> dict[str, Any]:
        """{head, left?, right?}."""
        parts = {"head": self.head, "left": self.left, "right": self.right}
        return {name: part.to_json() for name, part in parts.items() if part is not None}


@dataclass(frozen=True)
class TrackSample:
    """One downsampled pose of one participant, at `now` as passed to the hub."""

    time: float
    participant: str
    pose: Pose


def parse_pose(message: Any, limits: PoseLimits) -> Pose:
    """The Pose of a client `pose` message, or OpError (invalid). Requires nothing of `message`."""
    if not isinstance(message, Mapping):
        raise invalid("a pose must be an object {head, left?, right?}")
    unknown = message.keys() - _PART_SET
    if unknown:
        raise invalid(f"unknown pose field {min(unknown, key=str)!r}")
    if "head" not in message:
        raise invalid("a pose needs a head")
    return Pose(*(_transform(message[name], name, limits) if message.get(name) is not None else None
                  for name in PARTS))


def _transform(value: Any, path: str, limits: PoseLimits) -> Transform:
    """A validated, rounded Transform. Requires nothing of `value`."""
    if not isinstance(value, Mapping) or value.keys() != _TRANSFORM_KEYS:
        raise invalid(f"{path} must be an object {{position, quaternion}}")
    position = vector(value["position"], f"{path}.position", 3, limits.max_metres)
    rotation = quaternion(value["quaternion"], f"{path}.quaternion")
    return Transform(tuple([round(c, 4) for c in position]), tuple([round(c, 4) for c in rotation]))


class PoseHub:
    """The latest poses of one room's participants, batched per tick."""

    def __init__(self, limits: PoseLimits | None = None):
        self.limits = limits or PoseLimits()
        self._latest: dict[str, Pose] = {}
        self._seen: dict[str, float] = {}  # last accepted pose time per participant
        self._rates: dict[str, RateLimiter] = {}
        self._changed: set[str] = set()
        self._gone: set[str] = set()
        self._tracked: dict[str, float] = {}
        self._track: deque[TrackSample] = deque(maxlen=self.limits.max_track)

    def receive(self, participant_id: str, message: Any, now: float) -> bool:
        """Take the participant's pose; False if dropped for exceeding the rate. Requires a present participant.

        Raises OpError (invalid) for a malformed pose; the server ignores it or counts a violation.
        """
        limiter = self._rates.setdefault(participant_id, RateLimiter(self.limits.rate_hz, self.limits.burst))
        if not limiter.allow(now):
            return False
        pose = parse_pose(message, self.limits)
        self._latest[participant_id] = pose
        self._seen[participant_id] = now
        self._changed.add(participant_id)
        self._gone.discard(participant_id)
        if now - self._tracked.get(participant_id, -float("inf")) >= 1.0 / self.limits.track_hz:
            self._tracked[participant_id] = now
            self._track.append(TrackSample(now, participant_id, pose))
        return True

    def remove(self, participant_id: str) -> None:
        """Drop the participant's avatar (disconnect, leave, kick); the next frame lists it as gone."""
        if participant_id in self._latest:
            self._gone.add(participant_id)
        self._forget(participant_id)

    def tick(self, now: float) -> dict[str, Any] | None:
        """The batched `poses` frame {poses: {participant id: pose}, gone: [participant id]} since the last tick,
        or None if empty.

        Requires `now` not to go backwards. Expires avatars silent for `expire_s` seconds.
        """
        for participant_id, seen in list(self._seen.items()):
            if now - seen >= self.limits.expire_s:
                self.remove(participant_id)
        if not self._changed and not self._gone:
            return None
        frame = {
            "poses": {participant: self._latest[participant].to_json() for participant in sorted(self._changed)},
            "gone": sorted(self._gone),
        }
        self._changed.clear()
        self._gone.clear()
        return frame

    def latest(self) -> dict[str, Any]:
        """Every live avatar's latest pose, {participant_id: pose}: send it to a participant who just joined."""
        return {participant_id: pose.to_json() for participant_id, pose in sorted(self._latest.items())}

    def drain_track(self) -> list[TrackSample]:
        """The downsampled track since the last drain, oldest first; the hub forgets it."""
        samples = list(self._track)
        self._track.clear()
        return samples

    def _forget(self, participant_id: str) -> None:
        """Drop everything about participant_id except pending `gone`."""
        for table in (self._latest, self._seen, self._rates, self._tracked):
            table.pop(participant_id, None)
        self._changed.discard(participant_id)

"""Limits: the configurable bounds of a room (`RoomLimits`) and per-client rate limiting, pure.

Nothing here reads a clock: every method takes `now` (seconds, any monotonic origin), so the server passes
`time.monotonic()` and tests pass plain numbers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class RoomLimits:
    """Bounds enforced on every op and join. All are configurable; the defaults suit a teaching theatre."""

    max_participants: int = 64  # present at once
    max_annotations: int = 2000
    max_label_length: int = 200  # characters, point/measurement/stroke labels
    max_note_length: int = 4000  # characters, note text
    max_name_length: int = 64  # characters, display names
    max_stroke_points: int = 2000
    max_clip_planes: int = 6
    max_slice_planes: int = 3
    max_slice_size_mm: float = 10_000.0  # width and height of a slice plane
    max_window: float = 1e6  # a slice's window width, and |level|, in the image's units
    max_coordinate_mm: float = 10_000.0  # |x|, |y|, |z| of LPS positions
    max_model_metres: float = 100.0  # |x|, |y|, |z| of model-space positions
    min_scale: float = 0.01
    max_scale: float = 100.0
    max_op_bytes: int = 65_536  # JSON size of one op message
    max_resume_events: int = 1000  # beyond this, a reconnecting client gets a fresh snapshot
    op_rate: float = 20.0  # ops per second per participant (all their sockets together), sustained
    op_burst: float = 40.0  # ops a participant may send at once
    max_sockets_per_participant: int = 3  # connections one participant may hold at once (tabs, a headset)
    max_events_per_minute: int = 1200  # events the room logs per minute (sustained; a minute's worth at once)
    max_open_mics: int = 6  # microphones open at once (sessions/voice.py); each opens a stream to everyone
    max_signal_bytes: int = 16_384  # JSON size of one WebRTC `signal` message (an SDP offer is 2-6 KB)
    signal_rate: float = 50.0  # signals per second per participant, sustained (a speaker answers every listener)
    signal_burst: float = 200.0  # signals a participant may send at once (offers to a full class, candidates)
    max_violations: int = 20  # negative acks within `violation_window` before a disconnect
    violation_window: float = 10.0  # seconds

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"RoomLimits.{name} must be positive, got {value!r}")
        if self.min_scale >= self.max_scale:
            raise ValueError("RoomLimits.min_scale must be below max_scale")


class RateLimiter:
    """A token bucket: `rate` tokens per second, holding at most `burst`; it starts full."""

    def __init__(self, rate: float, burst: float):
        if not (rate > 0 and burst >= 1):
            raise ValueError(f"need rate > 0 and burst >= 1, got rate={rate}, burst={burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last: float | None = None

    def allow(self, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens if available and say whether it was. Requires `now` not to go backwards."""
        self._refill(now)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def tokens(self, now: float) -> float:
        """Tokens available at `now`. Requires `now` not to go backwards."""
        self._refill(now)
        return self._tokens

    def _refill(self, now: float) -> None:
        """Add the tokens earned since the last call. Requires `now` not to go backwards."""
        if self._last is not None and now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        if self._last is None or now > self._last:
            self._last = now


class ViolationCounter:
    """Counts a client's rejected messages in a sliding window; `record` says when to disconnect it."""

    def __init__(self, limit: int, window: float):
        if not (limit >= 1 and window > 0):
            raise ValueError(f"need limit >= 1 and window > 0, got limit={limit}, window={window}")
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque()

    def record(self, now: float) -> bool:
        """Record one violation; True if the client now exceeds `limit` within `window` seconds."""
        self._times.append(now)
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        return len(self._times) > self.limit

    @classmethod
    def for_room(cls, limits: RoomLimits) -> ViolationCounter:
        """The counter configured by `limits`. Requires valid limits."""
        return cls(limits.max_violations, limits.violation_window)


def op_rate_limiter(limits: RoomLimits) -> RateLimiter:
    """A fresh per-client op rate limiter configured by `limits`. Requires valid limits."""
    return RateLimiter(limits.op_rate, limits.op_burst)


def signal_rate_limiter(limits: RoomLimits) -> RateLimiter:
    """A fresh per-participant limiter of WebRTC signals configured by `limits`. Requires valid limits."""
    return RateLimiter(limits.signal_rate, limits.signal_burst)

"""The WebRTC signalling relay: `signal {to, data}` messages between the peers of one room, never logged.

Voice is peer to peer (docs/protocol.md "Voice"): an open mic sends its audio straight to each listener, and the
server only passes on what the two ends need to find each other (SDP offers and answers, ICE candidates, a
listener's request for audio). The rules of who may signal whom are sessions/voice.check_signal; this module
adds what needs the sockets:

- a participant's voice is on their newest connection to the room (a second tab or a headset takes it over), so
  a signal goes to that one socket and only that socket may send them;
- signals are rate-limited per participant (all their sockets together), like ops, with their own budget
  (`RoomLimits.signal_rate`, `signal_burst`): a speaker answers a whole class at once;
- a refusal is a negative ack with the reason, and counts as a violation like a refused op;
- nothing of a signal is written anywhere: not to the room's log, not to the server's.

The relayed message is `signal {from, data}`: the server names the sender, the client never does.
"""

from __future__ import annotations

import time
from typing import Any

from server.services.hub import MOVED, Hub, LiveRoom, nack
from sessions.limits import RateLimiter, signal_rate_limiter
from sessions.ops import ErrorCode, OpError
from sessions.voice import check_signal


class Signalling:
    """The `signal` handler of one hub's rooms."""

    def __init__(self, hub: Hub):
        self.hub = hub
        self._rates: dict[tuple[str, str], RateLimiter] = {}  # (room, participant) -> their signal budget

    async def on_signal(self, sid: str, message: Any = None) -> dict[str, Any]:
        """Handle `signal {to, data}`: relay it to the recipient's voice socket; ack {ok: true} or {ok: false,
        error}."""
        hub = self.hub
        member = hub.members.get(sid)
        if member is None or member.replay is not None:  # a replay is silent: audio was never recorded
            return nack(OpError(ErrorCode.FORBIDDEN, "this connection is not in a live room"))
        live = member.live
        if live.lost:  # another process owns the room now: this socket is being closed
            return {"ok": False, "error": {"code": "unavailable", "detail": MOVED}}
        limits = hub.limits
        try:
            budget = self._rates.get((live.id, member.participant))
            if budget is None:
                budget = self._rates[(live.id, member.participant)] = signal_rate_limiter(limits)
            if not budget.allow(time.monotonic()):
                raise OpError(ErrorCode.LIMIT, f"too many signals: at most {limits.signal_rate:g} per second "
                                               f"(bursts of {limits.signal_burst:g})")
            to, data = check_signal(live.room.state, member.participant, message, limits)
            if self.voice_socket(live, member.participant) != sid:
                raise OpError(ErrorCode.FORBIDDEN, "your voice is on your newer connection to this room")
            target = self.voice_socket(live, to)
            if target is None or target not in live.subscribers:
                raise OpError(ErrorCode.NOT_FOUND, f"{to} is not connected yet")
        except OpError as error:
            hub._violation(member, error)
            return nack(error)
        hub.fanout.send("signal", {"from": member.participant, "data": data}, target)
        return {"ok": True}

    def voice_socket(self, live: LiveRoom, participant: str) -> str | None:
        """The socket that carries `participant`'s voice: their newest connection to the room, or None."""
        members = self.hub.members
        sids = [sid for sid in live.sockets.get(participant, ()) if sid in members]
        return max(sids, key=lambda sid: members[sid].since) if sids else None

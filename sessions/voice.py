"""Talk rights: who holds the floor in a room, as room state that the log records and the server enforces.

The audio itself is never here, nor in the log: peers send it to each other (WebRTC), and the server only relays
their signalling (server/services/signalling.py) under the rules this module states.

The state (`VoiceState`, `RoomState.voice`):
- `mics`: the open microphones, participant -> the time (ms) it opened, in opening order. Only an open mic
  publishes audio; everyone else only receives.
- `hands`: raised hands, participant -> the time it was raised, in raising order (the instructor's queue).
- `allowed`: the instructor's word per participant (`voice.allow`), over the room's default: in a consult
  everyone but observers may talk; in a training room only instructors, until the instructor allows someone.

The ops (sessions/protocol.py declares their grants): `voice.mic {on}` opens or closes one's own mic;
`hand.raise` / `hand.lower` one's own hand; the instructor's `voice.allow {participant, allowed}` (allowing also
lowers the hand; withdrawing also closes the mic) and `voice.mute_all` (closes every mic but the instructors';
in a training room it also withdraws every allow). Opening a mic needs the right to talk (`talk_reason`) and a
free place under `RoomLimits.max_open_mics`.

One invariant holds after every event, live and in replay: every open mic belongs to someone who may talk now.
`settle` restores it after each event (a mute, a role change, a leave, a kick, the room's close), so the rule
lives here once rather than in each of those kinds; a leaving participant's hand goes down too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sessions.events import Event, ServerKind
from sessions.limits import RoomLimits
from sessions.ops import ErrorCode, OpError, OpKind, check_size, expect_fields, identifier, invalid
from sessions.roles import Role

if TYPE_CHECKING:
    from sessions.state import RoomState

CONSULT = "consult"  # sessions.room.RoomMode.CONSULT (room.py imports this module's users, not the other way)


@dataclass
class VoiceState:
    """Open mics and raised hands (participant -> ms, in order) and the instructor's allows."""

    mics: dict[str, int] = field(default_factory=dict)
    hands: dict[str, int] = field(default_factory=dict)
    allowed: dict[str, bool] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The `voice` of a snapshot: lists keep the order whatever the ids look like."""
        return {"mics": [{"participant": p, "at": at} for p, at in self.mics.items()],
                "hands": [{"participant": p, "at": at} for p, at in self.hands.items()],
                "allowed": dict(self.allowed)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> VoiceState:
        """The state of a snapshot's `voice` (None: a snapshot from before voice, all quiet)."""
        if not data:
            return cls()
        return cls({m["participant"]: m["at"] for m in data["mics"]},
                   {h["participant"]: h["at"] for h in data["hands"]}, dict(data["allowed"]))


def here(state: RoomState, participant_id: str) -> bool:
    """Whether `participant_id` is in the (open) room now."""
    participant = state.participants.get(participant_id)
    return participant is not None and participant.present and not participant.kicked and not state.closed


def talk_reason(state: RoomState, participant_id: str) -> str | None:
    """None if `participant_id` may open their mic now, else why not, in words a participant can read."""
    if not here(state, participant_id):
        return "you are not in this room"
    participant = state.participants[participant_id]
    if participant.role is Role.INSTRUCTOR:
        return None
    if participant.role is Role.OBSERVER:
        return "observers listen but do not talk"
    if participant.muted:
        return "you are muted by the instructor"
    consult = state.room.get("mode") == CONSULT
    if not state.voice.allowed.get(participant_id, consult):
        if consult:
            return "the instructor has withdrawn your voice"
        return "in a training room the instructor gives the floor: raise your hand"
    return None


def is_open(state: RoomState, participant_id: str) -> bool:
    """Whether `participant_id`'s mic is open (they publish audio)."""
    return participant_id in state.voice.mics


# ---- parsers ------------------------------------------------------------------------------------------------


def parse_voice_mic(fields: Mapping[str, Any], limits: RoomLimits) -> dict[str, Any]:
    """{on}: open or close one's own mic. Requires the op's fields."""
    expect_fields(fields, {"on"})
    if not isinstance(fields["on"], bool):
        raise invalid("on must be true or false")
    return {"on": fields["on"]}


def parse_voice_allow(fields: Mapping[str, Any], limits: RoomLimits) -> dict[str, Any]:
    """{participant, allowed}. Requires the op's fields."""
    expect_fields(fields, {"participant", "allowed"})
    if not isinstance(fields["allowed"], bool):
        raise invalid("allowed must be true or false")
    return {"participant": identifier(fields["participant"], "participant"), "allowed": fields["allowed"]}


# ---- prepare: check an op against the state -------------------------------------------------------------------


def prepare_voice_mic(state: RoomState, data: dict, author: str, seq: int, limits: RoomLimits) -> dict:
    """{on}. Opening needs the right to talk and a free place among the room's open mics; closing always
    passes. Requires a parsed voice.mic."""
    if data["on"]:
        reason = talk_reason(state, author)
        if reason is not None:
            raise OpError(ErrorCode.FORBIDDEN, reason)
        if author not in state.voice.mics and len(state.voice.mics) >= limits.max_open_mics:
            raise OpError(ErrorCode.LIMIT, f"{limits.max_open_mics} microphones are open, the room's limit; "
                                           "wait until one closes")
    return dict(data)


def prepare_voice_allow(state: RoomState, data: dict, author: str, seq: int, limits: RoomLimits) -> dict:
    """{participant, allowed} of a participant who is not an instructor. Requires a parsed voice.allow."""
    target = state.participants.get(data["participant"])
    if target is None or target.kicked:
        raise OpError(ErrorCode.NOT_FOUND, f"no participant {data['participant']!r} in the room")
    if target.id == author:
        raise invalid("you cannot allow yourself")
    if target.role is Role.INSTRUCTOR:
        raise invalid("instructors may always talk")
    return dict(data)


# ---- apply: the deterministic change --------------------------------------------------------------------------


def apply_voice_mic(state: RoomState, event: Event) -> None:
    """Open (taking the floor lowers one's hand) or close the author's mic."""
    voice = state.voice
    if event.data["on"]:
        voice.mics.setdefault(event.author, event.at)
        voice.hands.pop(event.author, None)
    else:
        voice.mics.pop(event.author, None)


def apply_hand_raise(state: RoomState, event: Event) -> None:
    """Raise the author's hand (raised already: it keeps its place in the queue)."""
    state.voice.hands.setdefault(event.author, event.at)


def apply_hand_lower(state: RoomState, event: Event) -> None:
    """Lower the author's hand."""
    state.voice.hands.pop(event.author, None)


def apply_voice_allow(state: RoomState, event: Event) -> None:
    """Record the instructor's word: the hand goes down; a withdrawn right closes the mic."""
    target, allowed = event.data["participant"], event.data["allowed"]
    state.voice.allowed[target] = allowed
    state.voice.hands.pop(target, None)
    if not allowed:
        state.voice.mics.pop(target, None)


def apply_voice_mute_all(state: RoomState, event: Event) -> None:
    """Close every mic but the instructors'; in a training room every allow is withdrawn as well."""
    voice = state.voice
    for participant_id in list(voice.mics):
        participant = state.participants.get(participant_id)
        if participant is None or participant.role is not Role.INSTRUCTOR:
            del voice.mics[participant_id]
    if state.room.get("mode") != CONSULT:
        voice.allowed.clear()


def settle(state: RoomState, event: Event) -> None:
    """After any event: close the mic of anyone who may no longer talk, and lower the hand of anyone who left."""
    voice = state.voice
    if event.kind in (ServerKind.PARTICIPANT_LEAVE, OpKind.PARTICIPANT_KICK):
        voice.hands.pop(event.data["participant"], None)
    elif event.kind == ServerKind.ROOM_CLOSE:
        voice.hands.clear()
    for participant_id in list(voice.mics):
        if talk_reason(state, participant_id) is not None:
            del voice.mics[participant_id]


# ---- signalling: what the server relays between peers -------------------------------------------------------

SIGNAL_TYPES = ("request", "offer", "answer", "candidate")
MAX_LINK = 2**31  # a signal's `link`: the sender's number for one peer connection, so stale answers are dropped
CANDIDATE_FIELDS = {"candidate": str, "sdpMid": str, "sdpMLineIndex": int, "usernameFragment": str}


def check_signal(state: RoomState, sender: str, message: Any, limits: RoomLimits) -> tuple[str, dict[str, Any]]:
    """The (recipient, data) of a `signal {to, data}` that `sender` may send now, or OpError.

    Who may signal whom: a `request` (please send me your audio) and an `answer` go to an open mic; an `offer`
    comes from an open mic only; ICE `candidate`s go either way between an open mic and its listener. Both ends
    are present in this room (a participant of another room is not found here). Requires nothing of `message`.
    """
    if not isinstance(message, Mapping):
        raise invalid("a signal must be a JSON object {to, data}")
    check_size(message, limits.max_signal_bytes, "signal")
    expect_fields(message, {"to", "data"})
    to = identifier(message["to"], "to")
    data = _signal_data(message["data"])
    if not here(state, sender):
        raise OpError(ErrorCode.FORBIDDEN, "you are not in this room")
    if not here(state, to):
        raise OpError(ErrorCode.NOT_FOUND, f"no participant {to!r} is in this room")
    if to == sender:
        raise invalid("a signal goes to someone else")
    kind = data["type"]
    if kind == "offer" and not is_open(state, sender):
        raise OpError(ErrorCode.FORBIDDEN, "your mic is not open: only an open mic sends audio")
    if kind in ("request", "answer") and not is_open(state, to):
        raise OpError(ErrorCode.NOT_FOUND, f"{to}'s mic is not open")
    if kind == "candidate" and not (is_open(state, sender) or is_open(state, to)):
        raise OpError(ErrorCode.NOT_FOUND, "neither mic is open")
    return to, data


def _signal_data(data: Any) -> dict[str, Any]:
    """A signal's `data` {type, link, sdp | candidate}, with nothing else. Requires nothing of `data`."""
    if not isinstance(data, Mapping) or data.get("type") not in SIGNAL_TYPES:
        raise invalid(f"data must be an object whose type is one of {list(SIGNAL_TYPES)}")
    kind = data["type"]
    payload = {"offer": "sdp", "answer": "sdp", "candidate": "candidate"}.get(kind)
    expect_fields(data, {"type", "link"} | ({payload} if payload else set()))
    link = data["link"]
    if isinstance(link, bool) or not isinstance(link, int) or not 0 <= link < MAX_LINK:
        raise invalid("link must be an integer from 0")
    result: dict[str, Any] = {"type": kind, "link": link}
    if payload == "sdp":
        if not isinstance(data["sdp"], str) or not data["sdp"].startswith("v=0"):
            raise invalid("sdp must be a session description (text starting with v=0)")
        result["sdp"] = data["sdp"]
    elif payload == "candidate":
        result["candidate"] = _candidate(data["candidate"])
    return result


def _candidate(value: Any) -> dict[str, Any] | None:
    """An RTCIceCandidateInit (null: the end of the candidates). Requires nothing of `value`."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not isinstance(value.get("candidate"), str):
        raise invalid("candidate must be null or an object with a candidate string")
    result = {}
    for name, kind in CANDIDATE_FIELDS.items():
        item = value.get(name)
        if item is None:
            continue
        if isinstance(item, bool) or not isinstance(item, kind):
            raise invalid(f"candidate.{name} must be a {kind.__name__}")
        result[name] = item
    unknown = set(value) - set(CANDIDATE_FIELDS)
    if unknown:
        raise invalid(f"unknown field candidate.{sorted(unknown)[0]}")
    return result

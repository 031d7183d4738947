"""Room invites: signed, expiring tokens that let one person into one room with one role; codes; QR codes.

A token is ``<payload>.<mac>``, both base64url without padding. The payload is compact JSON with sorted
keys, ``{"exp", "kind"?, "name", "nonce", "role", "room"}``; the mac is HMAC-SHA256 of the payload's base64url
text under the server's invite key (``data/invite-key``, created 0600 on first start like the admin token).
Nothing about an invite is stored: the signature is the proof, ``exp`` (seconds since the Unix epoch) the
end of its life, and the room itself refuses a closed room or a kicked participant. Rotating the key revokes
every invite.

The participant's pseudonym is a keyed hash of (room, nonce), so the same invite is the same participant (a
reconnect, a second tab) and two invites are two participants.

Two kinds. A *personal* invite (a fresh random nonce) is one person. A *role* invite (``"kind": "role"``) is
the link or QR code a room hands out per role: its nonce is derived from (room, role, generation), so the same
link can be shown again. Opening a role link asks for a display name and exchanges the link for a personal
invite (``POST /api/invites/exchange``), so two people who open it are two participants. A kick bans the
person's way in: it moves the kicked participant's role to its next generation, so that role's old link and
room code stop working at once (the instructors present are sent the new ones), and the kicked participant's
own invites are refused because the participant is.

A room code is 8 random digits that stand for one (room, role) until a deadline. Redeeming it with a display
name (``POST /api/join``) mints a personal invite: that is how a class of students gets in with one code typed
on a headset. A code can be guessed by brute force, so wrong attempts are throttled (`JoinThrottle`: backoff
per address and per code value, and a server-wide failure budget of 30 a minute, about 43,000 guesses a day
against 10^8 codes), while right ones are not; only training rooms get codes (what a wrongly admitted person
sees there is de-identified); and only for the roles in the `room_code_roles` setting (student and observer by
default: no guessed code can moderate, move the model or edit others' work). Codes die with the room's
invites (`invite_ttl`), when the room closes, or when a kick replaces them. Consult rooms and the other roles
use links and QR codes, whose tokens cannot be guessed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sessions.limits import RateLimiter
from sessions.ops import OpError, identifier, text
from sessions.roles import Role

INVITE_KEY_FILE = "invite-key"
MAX_TOKEN_LENGTH = 2048
CODE_DIGITS = 8
MAX_NAME_LENGTH = 64


class InviteError(ValueError):
    """A token that is malformed, forged or expired; or an invite that cannot be issued."""


class RoomNotOpenError(InviteError):
    """The room exists but takes no one new now: it is closed, or locked against new joins."""


PERSONAL, ROLE = "personal", "role"


@dataclass(frozen=True)
class Invite:
    """What a valid token says: who (name, role) may enter which room, until when, its nonce and its kind."""

    room: str
    role: Role
    name: str
    exp: int
    nonce: str
    kind: str = PERSONAL

    def to_json(self) -> dict:
        """The signed payload (`kind` only for a role invite, so personal tokens keep their old form)."""
        payload = {"exp": self.exp, "name": self.name, "nonce": self.nonce, "role": self.role.value,
                   "room": self.room}
        return {**payload, "kind": ROLE} if self.kind == ROLE else payload


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(value: str) -> bytes:
    """Requires base64url text without padding; raises InviteError otherwise."""
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as error:
        raise InviteError("the invite is not base64url") from error


def display_name(value: object) -> str:
    """A participant's display name: one line, 1 to 64 characters. Raises InviteError."""
    try:
        name = text(value, "name", MAX_NAME_LENGTH).strip()
    except OpError as error:
        raise InviteError(error.detail) from None
    if not name:
        raise InviteError("a display name is required")
    return name


class InviteSigner:
    """Issues and verifies invite tokens with one secret key."""

    def __init__(self, key: bytes):
        if len(key) < 16:
            raise ValueError("the invite key must be at least 16 bytes")
        self._key = key

    def issue(self, room: str, role: Role | str, name: str, exp: int, nonce: str | None = None,
              kind: str = PERSONAL) -> str:
        """A signed token. Requires a room id, a role, a display name and `exp` in seconds since the epoch."""
        try:
            invite = Invite(identifier(room, "room"), Role(role), display_name(name), int(exp),
                            nonce or secrets.token_hex(8), kind)
        except (OpError, ValueError) as error:
            raise InviteError(f"cannot issue this invite: {error}") from None
        payload = _b64(json.dumps(invite.to_json(), sort_keys=True, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def verify(self, token: object, now: float | None = None) -> Invite:
        """The invite of a token signed by this key and not expired at `now`. Requires nothing of `token`."""
        if (not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH or not token.isascii()
                or token.count(".") != 1):
            raise InviteError("not an invite token")
        payload, mac = token.split(".")
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise InviteError("the invite's signature does not match")
        try:
            fields = json.loads(_unb64(payload))
            invite = Invite(fields["room"], Role(fields["role"]), fields["name"], int(fields["exp"]),
                            str(fields["nonce"]), ROLE if fields.get("kind") == ROLE else PERSONAL)
        except (ValueError, KeyError, TypeError) as error:
            raise InviteError(f"the invite's payload is malformed: {error}") from None
        if invite.exp <= (time.time() if now is None else now):
            raise InviteError("the invite has expired")
        return invite

    def role_nonce(self, room: str, role: Role | str, generation: int = 0) -> str:
        """The nonce of a room's role invite of `generation` (0: the room's first), the same every time it is
        asked for, so the same link can be shown again. Requires ids and generation >= 0."""
        message = f"role-invite:{room}:{Role(role).value}" + (f":{generation}" if generation else "")
        digest = hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()[:16]
        return f"g{generation}-{digest}" if generation else digest

    def role_generation(self, invite: Invite) -> int | None:
        """The generation of a role invite's link (None: not a role link of its room and role). Cost: one MAC."""
        prefix, _, _ = invite.nonce.partition("-")
        generation = int(prefix[1:]) if prefix[:1] == "g" and prefix[1:].isdigit() else 0
        if generation > 1_000_000 or not hmac.compare_digest(
                invite.nonce, self.role_nonce(invite.room, invite.role, generation)):
            return None
        return generation

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())


def invite_link(base_url: str, token: str) -> str:
    """The link that opens the web client with `token`. Requires an absolute base URL."""
    return f"{base_url.rstrip('/')}/?invite={token}"


def new_room_code(taken: Callable[[str], bool]) -> str:
    """8 random digits that `taken` says are free. Requires `taken` to be false for most codes."""
    for _ in range(100):
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        if not taken(code):
            return code
    raise InviteError("no free room code found")


def normalise_code(value: object) -> str:
    """The digits of a typed code (spaces and dashes allowed). Raises InviteError."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise InviteError("code must be a string of 8 digits")
    digits = str(value).replace(" ", "").replace("-", "")
    if len(digits) != CODE_DIGITS or not digits.isascii() or not digits.isdigit():
        raise InviteError("code must be 8 digits")
    return digits


def qr_png(data: str, scale: int = 6) -> bytes:
    """A PNG QR code of `data` (error correction M, 4-module quiet zone). Requires segno."""
    import segno  # only this function needs it

    out = io.BytesIO()
    segno.make(data, error="m", micro=False).save(out, kind="png", scale=scale, border=4)
    return out.getvalue()


class JoinThrottle:
    """What a wrong room code (or a wrong role link) costs, so that a brute force is slow and a class is not.

    - Attempts per address: `per_minute` (a minute's worth at once), enough for a class behind one NAT.
    - Failures back off: after `FREE_FAILURES` wrong attempts an address waits 2, 4, 8 ... seconds (at most 5
      minutes) before the next, and so does a code value tried wrongly that often from anywhere.
    - A server-wide failure budget (`failures_per_minute`): when guesses from many addresses exhaust it,
      addresses with a recent failure wait; an address that has not failed (a student with the right code) is
      still heard. A right code is never refused for what others guessed.
    """

    FREE_FAILURES = 3
    MAX_BACKOFF = 300.0
    MEMORY = 600.0  # seconds a failure is remembered

    def __init__(self, per_minute: float = 60.0, failures_per_minute: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        if not per_minute > 0 or not failures_per_minute > 0:
            raise ValueError(f"the join rates must be positive, got {per_minute}, {failures_per_minute}")
        self.per_minute = per_minute
        self.clock = clock
        self._attempts: dict[str, RateLimiter] = {}
        self._failures = RateLimiter(failures_per_minute / 60.0, failures_per_minute)
        self._by_address: dict[str, tuple[int, float]] = {}  # address -> (failures, last failure)
        self._by_code: dict[str, tuple[int, float]] = {}

    def wait(self, address: str, code: str | None) -> float:
        """Seconds `address` must wait before trying `code` (0: go ahead; an attempt is taken)."""
        now = self.clock()
        self._forget(now)
        waits = [self._backoff(self._by_address.get(address), now)]
        if code is not None:
            waits.append(self._backoff(self._by_code.get(code), now))
        recent = address in self._by_address
        if recent and self._failures.tokens(now) < 1:
            waits.append(60.0 / (self._failures.rate * 60.0))
        attempts = self._attempts.setdefault(address, RateLimiter(self.per_minute / 60.0, max(1.0, self.per_minute)))
        if attempts.tokens(now) < 1:
            waits.append(60.0 / self.per_minute)
        wait = max(waits)
        if wait <= 0:
            attempts.allow(now)
        return wait

    def failed(self, address: str, code: str | None) -> None:
        """Count a wrong attempt of `address` (and of the code value it tried)."""
        now = self.clock()
        self._failures.allow(now)
        for table, key in ((self._by_address, address), (self._by_code, code)):
            if key is not None:
                count, _ = table.get(key, (0, now))
                table[key] = (count + 1, now)

    def succeeded(self, address: str) -> None:
        """A right code from `address`: its earlier mistakes are forgiven."""
        self._by_address.pop(address, None)

    def _backoff(self, entry: tuple[int, float] | None, now: float) -> float:
        if entry is None or entry[0] < self.FREE_FAILURES:
            return 0.0
        count, last = entry
        return max(0.0, last + min(self.MAX_BACKOFF, 2.0 ** (count - self.FREE_FAILURES + 1)) - now)

    def _forget(self, now: float) -> None:
        if len(self._by_address) + len(self._by_code) + len(self._attempts) < 20_000:
            return
        for table in (self._by_address, self._by_code):
            for key in [k for k, (_, last) in table.items() if now - last > self.MEMORY]:
                del table[key]
        self._attempts = {a: r for a, r in self._attempts.items() if r.tokens(now) < r.burst}

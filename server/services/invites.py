"""Room invites: signed, expiring tokens that let one person into one room with one role; codes; QR codes.

A token is ``<payload>.<mac>``, both base64url without padding. The payload is compact JSON with sorted
keys, ``{"exp", "name", "nonce", "role", "room"}``; the mac is HMAC-SHA256 of the payload's base64url text
under the server's invite key (``data/invite-key``, created 0600 on first start like the admin token).
Nothing about an invite is stored: the signature is the proof, ``exp`` (seconds since the Unix epoch) the
end of its life, and the room itself refuses a closed room or a kicked participant. Rotating the key revokes
every invite.

The participant's pseudonym is a keyed hash of (room, nonce), so the same invite is the same participant (a
reconnect, a second tab) and two invites are two participants.

A room code is 8 random digits that stand for one (room, role) until a deadline. Redeeming it with a display
name (``POST /api/join``) mints a personal invite with a fresh nonce: that is how a class of students gets
in with one code typed on a headset. A code can be guessed by brute force, so: redeeming is throttled per
address and server-wide (`JoinThrottle`: by default 10 a minute per address, 30 a minute in all, so about
43,000 guesses a day against 10^8 codes); only training rooms get codes (what a wrongly admitted person
sees there is de-identified); and only for the roles in the `room_code_roles` setting (student and
observer by default: no guessed code can moderate, move the model or edit others' work). Codes die with
the room's invites (`invite_ttl`) or when it closes. Consult rooms and the other roles use links and QR
codes, whose tokens cannot be guessed.
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


@dataclass(frozen=True)
class Invite:
    """What a valid token says: who (name, role) may enter which room, until when, and its nonce."""

    room: str
    role: Role
    name: str
    exp: int
    nonce: str

    def to_json(self) -> dict:
        """The signed payload."""
        return {"exp": self.exp, "name": self.name, "nonce": self.nonce, "role": self.role.value,
                "room": self.room}


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

    def issue(self, room: str, role: Role | str, name: str, exp: int, nonce: str | None = None) -> str:
        """A signed token. Requires a room id, a role, a display name and `exp` in seconds since the epoch."""
        try:
            invite = Invite(identifier(room, "room"), Role(role), display_name(name), int(exp),
                            nonce or secrets.token_hex(8))
        except (OpError, ValueError) as error:
            raise InviteError(f"cannot issue this invite: {error}") from None
        payload = _b64(json.dumps(invite.to_json(), sort_keys=True, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def verify(self, token: object, now: float | None = None) -> Invite:
        """The invite of a token signed by this key and not expired at `now`. Requires nothing of `token`."""
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH or token.count(".") != 1:
            raise InviteError("not an invite token")
        payload, mac = token.split(".")
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise InviteError("the invite's signature does not match")
        try:
            fields = json.loads(_unb64(payload))
            invite = Invite(fields["room"], Role(fields["role"]), fields["name"], int(fields["exp"]),
                            str(fields["nonce"]))
        except (ValueError, KeyError, TypeError) as error:
            raise InviteError(f"the invite's payload is malformed: {error}") from None
        if invite.exp <= (time.time() if now is None else now):
            raise InviteError("the invite has expired")
        return invite

    def role_nonce(self, room: str, role: Role | str) -> str:
        """The fixed nonce of a room's role invite, so the same token can be shown again. Requires ids."""
        message = f"role-invite:{room}:{Role(role).value}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:16]

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
    """Token buckets for redeeming room codes: one per client address and one for the whole server."""

    def __init__(self, per_minute: float, global_per_minute: float | None = None):
        if not per_minute > 0:
            raise ValueError(f"per_minute must be positive, got {per_minute}")
        self.per_minute = per_minute
        self._burst = max(1.0, per_minute)  # a minute's worth: a class behind one NAT address can get in
        self._global = RateLimiter((global_per_minute or per_minute * 3) / 60.0, max(1.0, per_minute * 3))
        self._by_address: dict[str, RateLimiter] = {}

    def allow(self, address: str, now: float) -> bool:
        """Whether `address` may try a code now (takes a token of both buckets). Requires monotonic `now`."""
        if len(self._by_address) > 10_000:
            self._by_address = {a: r for a, r in self._by_address.items() if r.tokens(now) < self._burst}
        limiter = self._by_address.setdefault(address, RateLimiter(self.per_minute / 60.0, self._burst))
        if limiter.tokens(now) < 1:
            return False
        if not self._global.allow(now):
            return False
        return limiter.allow(now)

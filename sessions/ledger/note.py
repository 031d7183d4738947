"""Checkpoints: signed tree heads as C2SP tlog-checkpoint signed notes, with Ed25519 keys.

A checkpoint note (c2sp.org/tlog-checkpoint over c2sp.org/signed-note) reads:

    <origin>
    <tree size>
    <base64 root>
    time <unix milliseconds>

    — <key name> <base64(key ID || Ed25519 signature)>

The "time" line is an extension line (the spec allows them after the root). The Ed25519 signature is over
the note text (the four body lines, final newline included). The key ID is the first four bytes of
SHA-256(key name || 0x0A || 0x01 || public key); a verifier key is written
"<name>+<hex key ID>+<base64(0x01 || public key)>" as in golang.org/x/mod/sumdb/note, so witnesses and
transparency-log tools read it as is.
Signatures by keys other than the verifier's (witness cosignatures) are ignored, as the spec requires; every
signature by the verifier's key must verify, or the whole note is rejected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519 = 0x01
MAX_SIGNATURES = 100
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_TIME_LINE = re.compile(r"time (0|[1-9][0-9]*)")
_SIGNATURE_PREFIX = "— "


class CheckpointError(ValueError):
    """A checkpoint note is rejected."""


class NoteFormatError(CheckpointError):
    """The note or its checkpoint body is malformed."""


class UnknownKeyError(CheckpointError):
    """The note carries no signature from the verifier's key (name and key ID)."""

    def __init__(self, expected: str, found: list[str]):
        super().__init__(f"no signature by {expected}; signed by {found or 'nobody'}")
        self.expected = expected
        self.found = found


class SignatureError(CheckpointError):
    """A signature from the verifier's key does not verify: the note was altered or forged."""


class OriginMismatchError(CheckpointError):
    """The checkpoint is for another log than expected."""

    def __init__(self, expected: str, found: str):
        super().__init__(f"checkpoint origin {found!r}, expected {expected!r}")
        self.expected = expected
        self.found = found


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: log `origin`, tree `size`, RFC 6962 `root`, `time` in ms since the Unix epoch (UTC)."""

    origin: str
    size: int
    root: bytes
    time: int

    def __post_init__(self) -> None:
        _check_name(self.origin, "origin")
        if self.size < 0 or self.time < 0:
            raise CheckpointError(f"size {self.size} and time {self.time} must be non-negative")
        if len(self.root) != 32:
            raise CheckpointError(f"root has {len(self.root)} bytes, want 32")

    def text(self) -> str:
        """The note text that is signed."""
        root = base64.b64encode(self.root).decode("ascii")
        return f"{self.origin}\n{self.size}\n{root}\ntime {self.time}\n"


@dataclass(frozen=True)
class Verifier:
    """A note verifier: key `name` and raw 32-byte Ed25519 `public_key`."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name, "key name")
        if len(self.public_key) != 32:
            raise CheckpointError(f"Ed25519 public key has {len(self.public_key)} bytes, want 32")

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID of this key."""
        return key_id(self.name, self.public_key)

    def vkey(self) -> str:
        """The verifier key string "<name>+<hex key ID>+<base64(0x01 || public key)>"."""
        key = base64.b64encode(bytes([ED25519]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{key}"

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse a verifier key string. Requires the note vkey format with an Ed25519 key."""
        parts = vkey.split("+", 2)  # the name has no "+"; the base64 key may
        if len(parts) != 3 or not re.fullmatch(r"[0-9a-fA-F]{8}", parts[1]):
            raise NoteFormatError(f"not a verifier key <name>+<8 hex>+<base64>: {vkey!r}")
        key = _b64decode(parts[2], "verifier key")
        if len(key) != 33 or key[0] != ED25519:
            raise NoteFormatError("verifier key is not 0x01 followed by a 32-byte Ed25519 key")
        verifier = cls(parts[0], key[1:])
        if verifier.key_id != bytes.fromhex(parts[1]):
            raise NoteFormatError(
                f"verifier key ID {parts[1]} does not match the key ({verifier.key_id.hex()})"
            )
        return verifier

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True when `signature` is this key's Ed25519 signature of `message`."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


def key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || 0x01 || public key)[:4]. Requires a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ED25519]) + public_key).digest()[:4]


def verifier_for(name: str, private_key: Ed25519PrivateKey) -> Verifier:
    """The Verifier of `private_key` under key `name`. Requires a valid key name."""
    return Verifier(name, public_key_bytes(private_key))


def sign_checkpoint(checkpoint: Checkpoint, key_name: str, private_key: Ed25519PrivateKey) -> str:
    """The signed note of `checkpoint`. Requires a key name without spaces or '+' (use the origin)."""
    signer = verifier_for(key_name, private_key)
    text = checkpoint.text()
    blob = signer.key_id + private_key.sign(text.encode("utf-8"))
    return f"{text}\n{_SIGNATURE_PREFIX}{key_name} {base64.b64encode(blob).decode('ascii')}\n"


def parse_and_verify(note: str, verifier: Verifier, origin: str | None = None) -> Checkpoint:
    """The checkpoint of a note signed by `verifier` (and for `origin`, if given). Requires a str note."""
    text, signatures = _split_note(note)
    message, verified, found = text.encode("utf-8"), 0, []
    for name, kid, signature in signatures:
        found.append(name)
        if name != verifier.name or kid != verifier.key_id:
            continue  # another key (a witness cosignature, or a rotated key): ignored
        if not verifier.verify(message, signature):
            raise SignatureError(f"signature by {verifier.name} does not verify")
        verified += 1
    if not verified:
        raise UnknownKeyError(f"{verifier.name}+{verifier.key_id.hex()}", found)
    checkpoint = parse_checkpoint_text(text)
    if origin is not None and checkpoint.origin != origin:
        raise OriginMismatchError(origin, checkpoint.origin)
    return checkpoint


def parse_checkpoint_text(text: str) -> Checkpoint:
    """The Checkpoint of an (already verified) note text. Requires the four-line checkpoint body."""
    lines = text.split("\n")
    if len(lines) != 5 or lines[4] != "":
        raise NoteFormatError(
            f"checkpoint text has {len(lines) - 1} lines, want 4 (origin, size, root, time)"
        )
    origin, size, root, time = lines[:4]
    if not _DECIMAL.fullmatch(size):
        raise NoteFormatError(f"tree size {size!r} is not a decimal without leading zeros")
    time_match = _TIME_LINE.fullmatch(time)
    if time_match is None:
        raise NoteFormatError(f"extension line {time!r} is not 'time <unix milliseconds>'")
    root_hash = _b64decode(root, "root")
    if len(root_hash) != 32:
        raise NoteFormatError(f"root has {len(root_hash)} bytes, want 32")
    return Checkpoint(origin, int(size), root_hash, int(time_match.group(1)))  # a bad origin: NoteFormatError


def _split_note(note: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """(text, [(key name, key ID, signature)]) of a signed note. Requires a str."""
    if any(ch < " " and ch != "\n" for ch in note):
        raise NoteFormatError("note contains a control character")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise NoteFormatError("note has no blank line before its signatures, or no final newline")
    text, block = note[: split + 1], note[split + 2 :]
    lines = block[:-1].split("\n") if block else []
    if not lines or len(lines) > MAX_SIGNATURES:
        raise NoteFormatError(f"note has {len(lines)} signature lines, want 1 to {MAX_SIGNATURES}")
    return text, [_parse_signature_line(line) for line in lines]


def _parse_signature_line(line: str) -> tuple[str, bytes, bytes]:
    """(key name, key ID, signature) of one "— <name> <base64>" line. Requires a line without newline."""
    parts = line.removeprefix(_SIGNATURE_PREFIX).split(" ")
    if not line.startswith(_SIGNATURE_PREFIX) or len(parts) != 2:
        raise NoteFormatError(f"malformed signature line {line!r}")
    _check_name(parts[0], "key name")
    blob = _b64decode(parts[1], "signature")
    if len(blob) < 5:
        raise NoteFormatError(f"signature of {parts[0]} is too short ({len(blob)} bytes)")
    return parts[0], blob[:4], blob[4:]


def _check_name(name: str, what: str) -> None:
    """Refuse empty names and names with a Unicode space or '+'. Requires a str."""
    if not name or "+" in name or any(ch.isspace() or ch < " " for ch in name):
        raise NoteFormatError(f"{what} {name!r} must be non-empty, without spaces or '+'")


def _b64decode(text: str, what: str) -> bytes:
    """Strict standard base64 (padding required, canonical). Requires a str."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise NoteFormatError(f"{what} is not base64: {text!r}") from error
    if base64.b64encode(data).decode("ascii") != text:
        raise NoteFormatError(f"{what} is not canonical base64: {text!r}")
    return data


def generate_signing_key() -> Ed25519PrivateKey:
    """A new random Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


def public_key_bytes(private_key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key of `private_key`."""
    return private_key.public_key().public_bytes_raw()


def private_key_to_raw(private_key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte private key (RFC 8032 seed). Keep it secret."""
    return private_key.private_bytes_raw()


def private_key_from_raw(raw: bytes) -> Ed25519PrivateKey:
    """The private key of a raw 32-byte seed. Requires 32 bytes."""
    if len(raw) != 32:
        raise CheckpointError(f"Ed25519 private key has {len(raw)} bytes, want 32")
    return Ed25519PrivateKey.from_private_bytes(raw)


def private_key_to_pem(private_key: Ed25519PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM of `private_key` (the server writes it 0600)."""
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def private_key_from_pem(pem: bytes) -> Ed25519PrivateKey:
    """The Ed25519 key in unencrypted PKCS#8 PEM. Requires an Ed25519 key."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"PEM holds a {type(key).__name__}, not an Ed25519 private key")
    return key

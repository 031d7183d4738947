"""The export bundle of a room's ledger (what `GET /api/rooms/{id}/export` returns), and its offline check.

A bundle is a zip, or the folder it unzips to:

    events.jsonl      line s is the leaf bytes of event seq s (canonical JSON) followed by "\\n"
    checkpoints.json  the signed checkpoint notes with their size, root, time and anchorings (receipts)
    anchors.json      this room's records of the local anchor chain, and the chain head at export
    key.vkey          the server key in signed-note verifier-key form (key name = the room's origin)
    key.pem           the same Ed25519 public key as PEM (SubjectPublicKeyInfo)
    README.txt        how to verify, by command and by hand
    manifest.note     a signed note listing the SHA-256 and length of every file above

This module is the format: the value types, writing a bundle (`write_bundle`, `bundle_bytes`), the signed
manifest, and opening a bundle for reading; `sessions.bundle_verify.verify_bundle` checks one. The manifest
makes every byte of every file evidence: a change anywhere, README.txt included, fails verification. A
bundle holds no patient identifier: whatever the log holds (room, participant and study ids are pseudonyms,
display names typed by participants, their labels and notes) and hashes. docs/ledger.md section 5 is the specification.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sessions.ledger.anchors import Anchor, checkpoint_hash
from sessions.ledger.bundle_tree import EVENTS
from sessions.ledger.note import CheckpointError, Verifier, parse_checkpoint_text, verifier_for

FORMAT = "theatrum-bundle/1"
CHECKPOINTS_FORMAT = "theatrum-checkpoints/1"
ANCHORS_FORMAT = "theatrum-anchors/1"
CHECKPOINTS, ANCHORS = "checkpoints.json", "anchors.json"
KEY_VKEY, KEY_PEM, README, MANIFEST = "key.vkey", "key.pem", "README.txt", "manifest.note"
FILES = (README, ANCHORS, CHECKPOINTS, EVENTS, KEY_PEM, KEY_VKEY)  # listed by the manifest, in this order
BACKENDS = ("local", "evm")
STATUSES = ("pending", "anchored", "failed")
RECEIPT_FIELDS = {
    "local": frozenset({"backend", "index", "hash", "time"}),
    "evm": frozenset({"backend", "chain_id", "tx_hash", "block_number", "block_hash", "from"}),
}
LIMITS = {README: 1 << 20, KEY_VKEY: 1 << 12, KEY_PEM: 1 << 12, MANIFEST: 1 << 16,
           CHECKPOINTS: 1 << 30, ANCHORS: 1 << 30}
_CHUNK = 1 << 23
# What reading a damaged zip member raises (CRC, deflate stream, a flipped method or flag).
DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same contents always give the same zip bytes
_SIGNATURE_PREFIX = "— "


class BundleError(Exception):
    """The input is not a readable bundle (bad input, not a failed verification). Names the path."""


# ---- what a bundle holds -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Anchoring:
    """Where one checkpoint stands with one anchoring backend; `receipt` is set once anchored."""

    backend: str
    status: str
    attempts: int = 0
    last_error: str | None = None
    receipt: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of checkpoints.json."""
        receipt = dict(self.receipt) if self.receipt is not None else None
        return {"backend": self.backend, "status": self.status, "attempts": self.attempts,
                "last_error": self.last_error, "receipt": receipt}


@dataclass(frozen=True)
class BundleCheckpoint:
    """A signed checkpoint note of the room and its anchorings."""

    note: str
    anchorings: tuple[Anchoring, ...] = ()


@dataclass(frozen=True)
class BundleContents:
    """Everything a bundle holds. `leaves` are the leaf bytes of seq 1..n; the last checkpoint covers n."""

    room: str
    origin: str
    leaves: Sequence[bytes]
    checkpoints: Sequence[BundleCheckpoint]
    anchors: Sequence[Anchor] = ()
    chain_head: Anchor | None = None


def write_bundle(target: str | Path, contents: BundleContents, key: Ed25519PrivateKey) -> Path:
    """Write the bundle as a zip (`target` ends in .zip) or as a new folder. Requires the signing key."""
    target = Path(target)
    if target.suffix.lower() == ".zip":
        with open(target, "wb") as out:
            _write(_ZipSink(out), contents, key)
    else:
        target.mkdir(parents=True)
        _write(_FolderSink(target), contents, key)
    return target


def bundle_bytes(contents: BundleContents, key: Ed25519PrivateKey) -> bytes:
    """The bundle as zip bytes (for an HTTP response). Requires the signing key."""
    out = io.BytesIO()
    _write(_ZipSink(out), contents, key)
    return out.getvalue()


def public_key_pem(public_key: bytes) -> bytes:
    """SubjectPublicKeyInfo PEM of a raw Ed25519 public key. Requires 32 bytes."""
    return Ed25519PublicKey.from_public_bytes(public_key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write(sink: _ZipSink | _FolderSink, contents: BundleContents, key: Ed25519PrivateKey) -> None:
    """Write every file of `contents` into `sink`, the manifest last. Requires a consistent contents."""
    verifier = verifier_for(contents.origin, key)
    entries = [_checkpoint_json(c) for c in contents.checkpoints]
    size = entries[-1]["size"] if entries else 0
    if len(contents.leaves) != size:
        raise ValueError(f"{len(contents.leaves)} events, but the last checkpoint covers {size}")
    files = {
        CHECKPOINTS: _json_bytes({"format": CHECKPOINTS_FORMAT, "room": contents.room,
                                  "origin": contents.origin, "checkpoints": entries}),
        ANCHORS: _json_bytes({"format": ANCHORS_FORMAT, "room": contents.room,
                              "records": [a.record() for a in contents.anchors],
                              "chain_head": _head_json(contents.chain_head)}),
        KEY_VKEY: (verifier.vkey() + "\n").encode("ascii"),
        KEY_PEM: public_key_pem(verifier.public_key),
        README: _readme(contents, verifier, entries[-1]["root"] if entries else "").encode("utf-8"),
    }
    digests = {name: (hashlib.sha256(data).hexdigest(), len(data)) for name, data in files.items()}
    for name, data in files.items():
        sink.write(name, data)
    digests[EVENTS] = sink.write_lines(EVENTS, contents.leaves)
    manifest = manifest_text(contents.room, contents.origin, size, digests)
    sink.write(MANIFEST, sign_note(manifest, contents.origin, key).encode("utf-8"))
    sink.close()


def _checkpoint_json(checkpoint: BundleCheckpoint) -> dict[str, Any]:
    """The checkpoints.json entry of a note. Requires a signed checkpoint note."""
    body = parse_checkpoint_text(note_text(checkpoint.note))
    return {"size": body.size, "root": body.root.hex(), "time": body.time,
            "checkpoint_hash": checkpoint_hash(body).hex(), "note": checkpoint.note,
            "anchorings": [a.to_json() for a in checkpoint.anchorings]}


def _head_json(head: Anchor | None) -> dict[str, Any] | None:
    """{index, hash} of the anchor chain head, or None."""
    return None if head is None else {"index": head.index, "hash": head.hash.hex()}


def _json_bytes(value: Any) -> bytes:
    """Readable JSON with sorted keys and a final newline. Requires JSON-ready values."""
    return (json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode("utf-8")


def manifest_text(room: str, origin: str, size: int, digests: Mapping[str, tuple[str, int]]) -> str:
    """The signed text of manifest.note. Requires a digest for every name of FILES."""
    lines = [FORMAT, f"room {room}", f"origin {origin}", f"events {size}"]
    lines += [f"file {name} {digests[name][0]} {digests[name][1]}" for name in FILES]
    return "\n".join(lines) + "\n"


def sign_note(text: str, name: str, key: Ed25519PrivateKey) -> str:
    """`text` as a signed note with one Ed25519 signature under key `name`. Requires text ending in "\\n"."""
    verifier = verifier_for(name, key)
    blob = verifier.key_id + key.sign(text.encode("utf-8"))
    return f"{text}\n{_SIGNATURE_PREFIX}{name} {base64.b64encode(blob).decode('ascii')}\n"


def note_text(note: str) -> str:
    """The signed text of a note (up to the blank line). Requires a note with a blank line."""
    end = note.find("\n\n")
    if end < 0:
        raise CheckpointError("note has no blank line before its signatures")
    return note[: end + 1]


class _ZipSink:
    """Files into a zip (deflated, fixed timestamps)."""

    def __init__(self, out: IO[bytes]):
        self._zip = zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6)

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
        info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
        return info

    def write(self, name: str, data: bytes) -> None:
        """Add one file. Requires a new name."""
        self._zip.writestr(self._info(name), data)

    def write_lines(self, name: str, lines: Sequence[bytes]) -> tuple[str, int]:
        """Add `lines`, each followed by a newline; return (SHA-256 hex, length). Requires no newline inside."""
        total = sum(map(len, lines)) + len(lines)
        with self._zip.open(self._info(name), "w", force_zip64=total >= 1 << 31) as out:
            return _write_lines(out.write, lines)

    def close(self) -> None:
        """Finish the zip."""
        self._zip.close()


class _FolderSink:
    """Files into a folder."""

    def __init__(self, folder: Path):
        self._folder = folder

    def write(self, name: str, data: bytes) -> None:
        """Write one file. Requires a new name."""
        (self._folder / name).write_bytes(data)

    def write_lines(self, name: str, lines: Sequence[bytes]) -> tuple[str, int]:
        """Write `lines`, each followed by a newline; return (SHA-256 hex, length)."""
        with open(self._folder / name, "wb") as out:
            return _write_lines(out.write, lines)

    def close(self) -> None:
        """Nothing to finish."""


def _write_lines(write: Callable[[bytes], Any], lines: Sequence[bytes]) -> tuple[str, int]:
    """Write lines in batches; (SHA-256 hex, bytes written). Requires leaves without a newline inside."""
    digest, length = hashlib.sha256(), 0
    step = 1 << 14
    for start in range(0, len(lines), step):
        batch = lines[start : start + step]
        if any(b"\n" in line for line in batch):
            raise ValueError("a leaf contains a newline: it is not canonical JSON")
        data = b"\n".join(batch) + b"\n"
        digest.update(data)
        length += len(data)
        write(data)
    return digest.hexdigest(), length


def _readme(contents: BundleContents, verifier: Verifier, root: str) -> str:
    """README.txt."""
    return README_TEXT.format(room=contents.room, origin=contents.origin, vkey=verifier.vkey(),
                              events=len(contents.leaves), checkpoints=len(contents.checkpoints), root=root)


README_TEXT = """\
Theatrum ledger bundle of room {room}

This is the tamper-evident record of one room: every event in order, the server's signed checkpoints of
the room's RFC 6962 Merkle log, and the anchors that put those checkpoints where the server cannot
rewrite them. It holds no patient identifiers (the study and participants are pseudonymous ids), but it does
hold the display names people typed when they joined, and the labels and notes they wrote: treat it as
personal data of the room's participants.

  events:      {events}
  checkpoints: {checkpoints}, last root {root}
  log origin:  {origin}
  server key:  {vkey}

VERIFY

  theatrum verify BUNDLE                 offline: events, tree, signatures, consistency, anchors, manifest
  theatrum verify BUNDLE --rpc URL       also read each EVM anchor transaction from that JSON-RPC node
  theatrum verify BUNDLE --key VKEY      pin the server key (GET /api/ledger/key?room={room} on the server)

Exit status 0: everything holds. 1: something does not; the first failing seq or checkpoint is named.
2: not a bundle. Without --key the bundle's own key.vkey is trusted: compare it with the server's.

BY HAND (the specification is docs/ledger.md of Theatrum)

1. events.jsonl: line s (from 1) is the canonical JSON of event seq s, then "\\n". Its leaf hash is
   SHA-256(0x00 || the line's bytes without the newline).
2. The tree over the first m leaves is RFC 6962 / RFC 9162: node hash SHA-256(0x01 || left || right),
   split at the largest power of two below m.
3. checkpoints.json: each "note" is a C2SP tlog-checkpoint signed note (origin, size, base64 root,
   "time <ms>"). Check its Ed25519 signature with key.vkey (or key.pem) over the note text (the lines before
   the blank line, final newline included), and that its root is the tree root at its size.
   checkpoint_hash = SHA-256(note text). Each later checkpoint must extend the earlier one (consistency).
4. anchors.json: each local anchor record's hash is SHA-256 of the canonical JSON of its other seven
   fields, prev_hash included; it names its checkpoint by checkpoint_hash, size and root.
5. EVM receipts (checkpoints.json, backend "evm"): the transaction's data is "THTR" 0x01, the 32-byte root,
   the size as 8 bytes big-endian, then the room pseudonym in UTF-8.
6. manifest.note: a signed note (same key) listing the SHA-256 and length of every file, this one included.
"""


def verify_note(note: str, verifier: Verifier) -> str:
    """The text of a note carrying exactly one valid signature by `verifier`. Raises CheckpointError."""
    text = note_text(note)
    line = note[len(text) + 1 :]
    name, _, blob = line.removeprefix(_SIGNATURE_PREFIX).removesuffix("\n").partition(" ")
    if not line.startswith(_SIGNATURE_PREFIX) or not line.endswith("\n") or "\n" in line[:-1]:
        raise CheckpointError("the note must end with exactly one signature line")
    try:
        signature = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError("the signature is not base64") from None
    if base64.b64encode(signature).decode("ascii") != blob:
        raise CheckpointError("the signature is not canonical base64")
    if name != verifier.name or signature[:4] != verifier.key_id:
        raise CheckpointError(f"the note is signed by {name!r}, not by {verifier.name}")
    if not verifier.verify(text.encode("utf-8"), signature[4:]):
        raise CheckpointError(f"the signature by {verifier.name} does not verify")
    return text


# ---- reading a zip or a folder ---------------------------------------------------------------------


class BundleTooLarge(Exception):
    """A bundle file is larger than its limit (LIMITS)."""


class BundleReader:
    """The files of a bundle, from a zip or a folder. A zip with one top folder is read inside it."""

    def __init__(self, source: str, zip_file: zipfile.ZipFile | None, folder: Path | None):
        self.source = source
        self._zip, self._folder = zip_file, folder
        self._prefix, self._names = "", []
        if zip_file is not None:
            names = [n for n in zip_file.namelist() if not n.endswith("/")]
            tops = {n.split("/", 1)[0] for n in names}
            if len(tops) == 1 and all("/" in n for n in names):
                self._prefix = tops.pop() + "/"
            self._names = [n.removeprefix(self._prefix) for n in names]
        elif folder is not None:
            self._names = sorted(p.name if p.is_file() else f"{p.name}/" for p in folder.iterdir())

    def names(self) -> list[str]:
        """The file names (a zip may repeat one)."""
        return self._names

    def duplicates(self) -> list[str]:
        """Names a zip holds more than once."""
        return sorted({n for n in self._names if self._names.count(n) > 1})

    def read(self, name: str, limit: int) -> bytes:
        """The whole file; BundleTooLarge past `limit` bytes. Requires a present name."""
        return b"".join(self._chunks(name, limit))

    def chunks(self, name: str) -> Iterator[bytes]:
        """The file in chunks. Requires a present name."""
        return self._chunks(name, None)

    def _chunks(self, name: str, limit: int | None) -> Iterator[bytes]:
        total = 0
        try:
            with self._open(name) as stream:
                while chunk := stream.read(_CHUNK):
                    total += len(chunk)
                    if limit is not None and total > limit:
                        raise BundleTooLarge(name)
                    yield chunk
        except OSError as error:
            raise BundleError(f"{self.source}: cannot read {name}: {error.strerror or error}") from None

    def _open(self, name: str) -> IO[bytes]:
        if self._zip is not None:
            return self._zip.open(self._prefix + name)
        assert self._folder is not None
        return open(self._folder / name, "rb")

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._zip is not None:
            self._zip.close()


def open_bundle(source: str | Path | bytes) -> BundleReader:
    """A reader of the bundle at `source`. Raises BundleError if it is no bundle at all."""
    if isinstance(source, bytes | bytearray):
        label, opener = "<bytes>", lambda: zipfile.ZipFile(io.BytesIO(source))
    else:
        path = Path(source)
        label, opener = str(path), lambda: zipfile.ZipFile(path)
        if path.is_dir():
            return _known(BundleReader(label, None, path))
        if not path.exists():
            raise BundleError(f"{label}: no such file or folder")
    try:
        reader = BundleReader(label, opener(), None)
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError):
        raise BundleError(f"{label}: not a bundle (neither a zip file nor a folder)") from None
    except OSError as error:
        raise BundleError(f"{label}: cannot read: {error.strerror or error}") from None
    return _known(reader)


def _known(reader: BundleReader) -> BundleReader:
    """`reader`, if it holds at least one bundle file. Raises BundleError."""
    if not set(reader.names()) & {*FILES, MANIFEST}:
        reader.__exit__()
        raise BundleError(f"{reader.source}: not a bundle (it holds none of {', '.join((*FILES, MANIFEST))})")
    return reader

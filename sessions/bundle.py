"""The export bundle of a room's ledger (what `GET /api/rooms/{id}/export` returns), and its offline check.

A bundle is a zip, or the folder it unzips to:

    events.jsonl      line s is the leaf bytes of event seq s (canonical JSON) followed by "\\n"
    checkpoints.json  the signed checkpoint notes with their size, root, time and anchorings (receipts)
    anchors.json      this room's records of the local anchor chain, and the chain head at export
    key.vkey          the server key in signed-note verifier-key form (key name = the room's origin)
    key.pem           the same Ed25519 public key as PEM (SubjectPublicKeyInfo)
    README.txt        how to verify, by command and by hand
    manifest.note     a signed note listing the SHA-256 and length of every file above

`verify_bundle` recomputes every leaf hash and the tree, checks each checkpoint's signature and root, the
RFC 9162 consistency proof between successive checkpoints (computed from the events), the anchor records
and receipts, then the manifest; it stops at the first failure and names its seq or checkpoint. The
manifest makes every byte of every file evidence: a change anywhere, README.txt included, fails. It holds
only pseudonyms: whatever the log holds (room, participant and study ids are pseudonyms) and hashes.
docs/ledger.md section 5 is the specification.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import zipfile
import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import IO, Any, NoReturn

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sessions.anchor import Anchor, AnchorError, checkpoint_hash
from sessions.canonical import CanonicalError, decode_event
from sessions.checkpoint import (
    Checkpoint,
    CheckpointError,
    Verifier,
    parse_and_verify,
    parse_checkpoint_text,
    verifier_for,
)
from sessions.ledger import MerkleLog
from sessions.merkle import ProofError, verify_consistency

FORMAT = "theatrum-bundle/1"
CHECKPOINTS_FORMAT = "theatrum-checkpoints/1"
ANCHORS_FORMAT = "theatrum-anchors/1"
EVENTS, CHECKPOINTS, ANCHORS = "events.jsonl", "checkpoints.json", "anchors.json"
KEY_VKEY, KEY_PEM, README, MANIFEST = "key.vkey", "key.pem", "README.txt", "manifest.note"
FILES = (README, ANCHORS, CHECKPOINTS, EVENTS, KEY_PEM, KEY_VKEY)  # listed by the manifest, in this order
BACKENDS = ("local", "evm")
STATUSES = ("pending", "anchored", "failed")
RECEIPT_FIELDS = {
    "local": frozenset({"backend", "index", "hash", "time"}),
    "evm": frozenset({"backend", "chain_id", "tx_hash", "block_number", "block_hash", "from"}),
}
_LIMITS = {README: 1 << 20, KEY_VKEY: 1 << 12, KEY_PEM: 1 << 12, MANIFEST: 1 << 16,
           CHECKPOINTS: 1 << 30, ANCHORS: 1 << 30}
_CHUNK = 1 << 23
# What reading a damaged zip member raises (CRC, deflate stream, a flipped method or flag).
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same contents always give the same zip bytes
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TX_HASH = re.compile(r"0x[0-9a-f]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_SIGNATURE_PREFIX = "— "
_HEAD = b'{"at":'  # every canonical event starts so: "at" is its first key

# rpc_check(checkpoint, room, receipt) -> None if the on-chain anchor matches, else the problem in words.
RpcCheck = Callable[[Checkpoint, str, Mapping[str, Any]], str | None]


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
        """The JSON object of checkpoints.json. Requires nothing."""
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
    manifest = _manifest_text(contents.room, contents.origin, size, digests)
    sink.write(MANIFEST, _sign_note(manifest, contents.origin, key).encode("utf-8"))
    sink.close()


def _checkpoint_json(checkpoint: BundleCheckpoint) -> dict[str, Any]:
    """The checkpoints.json entry of a note. Requires a signed checkpoint note."""
    body = parse_checkpoint_text(_note_text(checkpoint.note))
    return {"size": body.size, "root": body.root.hex(), "time": body.time,
            "checkpoint_hash": checkpoint_hash(body).hex(), "note": checkpoint.note,
            "anchorings": [a.to_json() for a in checkpoint.anchorings]}


def _head_json(head: Anchor | None) -> dict[str, Any] | None:
    """{index, hash} of the anchor chain head, or None. Requires nothing."""
    return None if head is None else {"index": head.index, "hash": head.hash.hex()}


def _json_bytes(value: Any) -> bytes:
    """Readable JSON with sorted keys and a final newline. Requires JSON-ready values."""
    return (json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _manifest_text(room: str, origin: str, size: int, digests: Mapping[str, tuple[str, int]]) -> str:
    """The signed text of manifest.note. Requires a digest for every name of FILES."""
    lines = [FORMAT, f"room {room}", f"origin {origin}", f"events {size}"]
    lines += [f"file {name} {digests[name][0]} {digests[name][1]}" for name in FILES]
    return "\n".join(lines) + "\n"


def _sign_note(text: str, name: str, key: Ed25519PrivateKey) -> str:
    """`text` as a signed note with one Ed25519 signature under key `name`. Requires text ending in "\\n"."""
    verifier = verifier_for(name, key)
    blob = verifier.key_id + key.sign(text.encode("utf-8"))
    return f"{text}\n{_SIGNATURE_PREFIX}{name} {base64.b64encode(blob).decode('ascii')}\n"


def _note_text(note: str) -> str:
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
        """Finish the zip. Requires nothing."""
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
    """README.txt. Requires nothing."""
    return README_TEXT.format(room=contents.room, origin=contents.origin, vkey=verifier.vkey(),
                              events=len(contents.leaves), checkpoints=len(contents.checkpoints), root=root)


README_TEXT = """\
Theatrum ledger bundle of room {room}

This is the tamper-evident record of one room: every event in order, the server's signed checkpoints of
the room's RFC 6962 Merkle log, and the anchors that put those checkpoints where the server cannot
rewrite them. It holds pseudonyms only.

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


# ---- verification ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """The first thing that does not hold: its seq and/or checkpoint (1-based, as in checkpoints.json)."""

    message: str
    seq: int | None = None
    checkpoint: int | None = None
    file: str | None = None

    def where(self) -> str:
        """'seq 17', 'checkpoint 3', 'seq 17 (checkpoint 3)' or the file. Requires nothing."""
        if self.seq is not None and self.checkpoint is not None:
            return f"seq {self.seq} (checkpoint {self.checkpoint})"
        if self.seq is not None:
            return f"seq {self.seq}"
        if self.checkpoint is not None:
            return f"checkpoint {self.checkpoint}"
        return self.file or "bundle"


@dataclass(frozen=True)
class VerifyReport:
    """What `verify_bundle` found. `ok` iff `failure` is None."""

    source: str
    failure: Failure | None
    room: str | None = None
    origin: str | None = None
    vkey: str | None = None
    events: int = 0
    root: str | None = None
    checkpoints: int = 0
    local_anchors: int = 0
    evm_anchors: int = 0
    evm_checked: int = 0
    unanchored: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when everything holds."""
        return self.failure is None

    def to_json(self) -> dict[str, Any]:
        """A JSON object for `theatrum verify --json`. Requires nothing."""
        failure = None
        if self.failure is not None:
            failure = {"where": self.failure.where(), "message": self.failure.message, "seq": self.failure.seq,
                       "checkpoint": self.failure.checkpoint, "file": self.failure.file}
        return {"ok": self.ok, "source": self.source, "room": self.room, "origin": self.origin,
                "vkey": self.vkey, "events": self.events, "root": self.root, "checkpoints": self.checkpoints,
                "local_anchors": self.local_anchors, "evm_anchors": self.evm_anchors,
                "evm_checked": self.evm_checked, "unanchored": list(self.unanchored),
                "notes": list(self.notes), "failure": failure}


def verify_bundle(
    source: str | Path | bytes,
    *,
    rpc_check: RpcCheck | None = None,
    trusted_key: bytes | None = None,
    strict: bool = False,
) -> VerifyReport:
    """Check a bundle (zip path, folder path, or zip bytes); report the first failure.

    Requires nothing of the input; raises BundleError only when it is not a readable bundle at all.
    `trusted_key` (raw Ed25519 public key) pins the server key; `rpc_check` checks each EVM anchor on chain;
    `strict` also checks that every line is the canonical encoding of its event (slower).
    """
    with _open_bundle(source) as reader:
        run = _Verification(reader, rpc_check, trusted_key, strict)
        try:
            run.run()
        except _Failed as failed:
            return run.report(failed.failure)
        return run.report(None)


class _Failed(Exception):
    def __init__(self, failure: Failure):
        super().__init__(failure.message)
        self.failure = failure


def _fail(message: str, *, seq: int | None = None, checkpoint: int | None = None,
          file: str | None = None) -> NoReturn:
    raise _Failed(Failure(message, seq, checkpoint, file))


@dataclass(frozen=True)
class _Entry:
    """A checked checkpoint of checkpoints.json: its 1-based number, body, and anchorings."""

    number: int
    checkpoint: Checkpoint
    anchorings: tuple[Anchoring, ...]


@dataclass
class _Verification:
    """One run of verify_bundle: the steps in order, each raising _Failed at the first problem."""

    reader: _Reader
    rpc_check: RpcCheck | None
    trusted_key: bytes | None
    strict: bool
    verifier: Verifier | None = None
    room: str | None = None
    origin: str | None = None
    entries: list[_Entry] = field(default_factory=list)
    events: int = 0
    root: str | None = None
    local_anchors: int = 0
    evm_checked: int = 0
    digests: dict[str, tuple[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def run(self) -> None:
        """Every check, in the order that names the earliest problem. Requires an open reader."""
        for name in self.reader.duplicates():
            _fail(f"the zip holds {name} more than once", file=name)
        self._key()
        self._checkpoints()
        self._anchors()
        self._events()
        self._manifest()
        self._on_chain()
        extra = sorted(set(self.reader.names()) - {*FILES, MANIFEST})
        if extra:
            self.notes.append(f"not part of the bundle, not checked: {', '.join(extra)}")

    def report(self, failure: Failure | None) -> VerifyReport:
        """The report of this run. Requires nothing."""
        anchored = [{a.backend for a in e.anchorings if a.status == "anchored"} for e in self.entries]
        evm = sum("evm" in backends for backends in anchored)
        unanchored = tuple(e.number for e, backends in zip(self.entries, anchored, strict=True) if not backends)
        notes = list(self.notes)
        if failure is None and self.trusted_key is None:
            notes.append("the key was not pinned (--key): compare key.vkey with the server's GET /api/ledger/key")
        if failure is None and evm and self.rpc_check is None:
            notes.append(f"{evm} EVM anchor(s) not checked on chain (use --rpc URL)")
        if failure is None and unanchored:
            notes.append(f"{len(unanchored)} checkpoint(s) not anchored yet: {_numbers(unanchored)}")
        return VerifyReport(
            self.reader.source, failure, self.room, self.origin, self.verifier.vkey() if self.verifier else None,
            self.events, self.root, len(self.entries), self.local_anchors, evm, self.evm_checked, unanchored,
            tuple(notes))

    # ---- the key ---------------------------------------------------------------------------------

    def _key(self) -> None:
        """key.vkey parses, key.pem is the same key, and it is the trusted key if one is pinned."""
        raw = self._read(KEY_VKEY)
        try:
            text = raw.decode("ascii")
            verifier = Verifier.from_vkey(text.removesuffix("\n"))
        except (UnicodeDecodeError, CheckpointError) as error:
            _fail(f"{KEY_VKEY} is not a verifier key: {error}", file=KEY_VKEY)
        if text != verifier.vkey() + "\n":
            _fail(f"{KEY_VKEY} is not exactly one verifier key line", file=KEY_VKEY)
        if self._read(KEY_PEM) != public_key_pem(verifier.public_key):
            _fail(f"{KEY_PEM} is not the PEM of the key in {KEY_VKEY}", file=KEY_PEM)
        if self.trusted_key is not None and verifier.public_key != self.trusted_key:
            _fail(f"{KEY_VKEY} holds key {verifier.public_key.hex()}, not the trusted key "
                  f"{self.trusted_key.hex()}", file=KEY_VKEY)
        self.verifier = verifier

    # ---- checkpoints -----------------------------------------------------------------------------

    def _checkpoints(self) -> None:
        """Every note verifies under the key, matches its fields; sizes and times never go backwards."""
        document = self._json(CHECKPOINTS, {"format", "room", "origin", "checkpoints"})
        if document["format"] != CHECKPOINTS_FORMAT:
            _fail(f"{CHECKPOINTS} is not {CHECKPOINTS_FORMAT}", file=CHECKPOINTS)
        room, origin = document["room"], document["origin"]
        if not isinstance(room, str) or not room or not isinstance(origin, str) or not origin.endswith("/" + room):
            _fail(f"{CHECKPOINTS}: origin {origin!r} is not the log of room {room!r}", file=CHECKPOINTS)
        assert self.verifier is not None
        if origin != self.verifier.name:
            _fail(f"{CHECKPOINTS}: origin {origin!r} differs from the key name {self.verifier.name!r}",
                  file=CHECKPOINTS)
        self.room, self.origin = room, origin
        items = document["checkpoints"]
        if not isinstance(items, list) or not items:
            _fail(f"{CHECKPOINTS} holds no checkpoint: nothing is signed", file=CHECKPOINTS)
        for number, item in enumerate(items, start=1):
            entry = self._entry(number, item)
            if self.entries:
                _check_order(self.entries[-1], entry)
            self.entries.append(entry)

    def _entry(self, number: int, item: Any) -> _Entry:
        """The checked entry `number` of checkpoints.json. Requires the key and origin."""
        where = f"checkpoint {number}"
        _check_fields(item, {"size", "root", "time", "checkpoint_hash", "note", "anchorings"}, where, number)
        if not isinstance(item["note"], str):
            _fail(f"{where}: note is not a string", checkpoint=number)
        assert self.verifier is not None
        try:
            checkpoint = parse_and_verify(item["note"], self.verifier, self.origin)
        except CheckpointError as error:
            _fail(f"{where}: {error}", checkpoint=number)
        expected = {"size": checkpoint.size, "root": checkpoint.root.hex(), "time": checkpoint.time,
                    "checkpoint_hash": checkpoint_hash(checkpoint).hex()}
        for name, value in expected.items():
            if type(item[name]) is not type(value) or item[name] != value:
                _fail(f"{where}: {name} {item[name]!r} is not the signed note's {value!r}", checkpoint=number)
        if checkpoint.size < 1:
            _fail(f"{where}: size 0 (an empty tree proves nothing)", checkpoint=number)
        anchorings = item["anchorings"]
        if not isinstance(anchorings, list):
            _fail(f"{where}: anchorings is not a list", checkpoint=number)
        parsed = tuple(_anchoring(value, where, number) for value in anchorings)
        backends = [a.backend for a in parsed]
        if len(set(backends)) != len(backends):
            _fail(f"{where}: a backend is listed twice", checkpoint=number)
        return _Entry(number, checkpoint, parsed)

    # ---- anchors ---------------------------------------------------------------------------------

    def _anchors(self) -> None:
        """Each record hashes right, anchors a checkpoint of this bundle, and is that checkpoint's receipt."""
        document = self._json(ANCHORS, {"format", "room", "records", "chain_head"})
        if document["format"] != ANCHORS_FORMAT or document["room"] != self.room:
            _fail(f"{ANCHORS} is not {ANCHORS_FORMAT} of room {self.room}", file=ANCHORS)
        records = document["records"]
        if not isinstance(records, list):
            _fail(f"{ANCHORS}: records is not a list", file=ANCHORS)
        by_hash = {checkpoint_hash(e.checkpoint): e for e in self.entries}
        receipts = {}
        for entry in self.entries:
            for anchoring in entry.anchorings:
                if anchoring.backend == "local" and anchoring.status == "anchored":
                    assert anchoring.receipt is not None
                    if anchoring.receipt["index"] in receipts:
                        _fail(f"checkpoint {entry.number}: local anchor record {anchoring.receipt['index']} is "
                              "the receipt of two checkpoints", checkpoint=entry.number)
                    receipts[anchoring.receipt["index"]] = (entry, anchoring.receipt)
        previous: Anchor | None = None
        for record in records:
            anchor = _anchor(record)
            self._check_anchor(anchor, previous, by_hash, receipts)
            previous = anchor
            self.local_anchors += 1
        for index, (entry, _) in sorted(receipts.items()):
            _fail(f"checkpoint {entry.number}: its local anchor record {index} is not in {ANCHORS}",
                  checkpoint=entry.number, file=ANCHORS)
        _check_head(document["chain_head"], previous)

    def _check_anchor(self, anchor: Anchor, previous: Anchor | None, by_hash: Mapping[bytes, _Entry],
                      receipts: dict[int, tuple[_Entry, Mapping[str, Any]]]) -> None:
        """One anchor record against its predecessor, its checkpoint and its receipt. Requires a parsed record."""
        where = f"{ANCHORS}: record {anchor.index}"
        if anchor.computed_hash() != anchor.hash:
            _fail(f"{where}: hash {anchor.hash.hex()} is not the hash of its fields "
                  f"({anchor.computed_hash().hex()})", file=ANCHORS)
        if anchor.room != self.room:
            _fail(f"{where} is of room {anchor.room!r}", file=ANCHORS)
        if previous is not None and anchor.index <= previous.index:
            _fail(f"{where} follows record {previous.index}: out of order", file=ANCHORS)
        if previous is not None and anchor.index == previous.index + 1 and anchor.prev_hash != previous.hash:
            _fail(f"{where}: prev_hash does not link to record {previous.index}", file=ANCHORS)
        entry = by_hash.get(anchor.checkpoint_hash)
        if entry is None:
            _fail(f"{where} anchors checkpoint {anchor.checkpoint_hash.hex()}, which is not in the bundle",
                  file=ANCHORS)
        if (anchor.size, anchor.root) != (entry.checkpoint.size, entry.checkpoint.root):
            _fail(f"{where}: size and root differ from checkpoint {entry.number}", checkpoint=entry.number,
                  file=ANCHORS)
        paired = receipts.pop(anchor.index, None)
        if paired is None or paired[0] is not entry:
            _fail(f"{where} is not the local receipt of checkpoint {entry.number}", checkpoint=entry.number,
                  file=ANCHORS)
        receipt = paired[1]
        if receipt["hash"] != anchor.hash.hex() or receipt["time"] != anchor.time:
            _fail(f"checkpoint {entry.number}: its local receipt differs from record {anchor.index}",
                  checkpoint=entry.number, file=ANCHORS)

    # ---- events and the tree ---------------------------------------------------------------------

    def _events(self) -> None:
        """Every line is the event of its seq in this room; the tree at each checkpoint has its root."""
        sizes = [e.checkpoint.size for e in self.entries]
        covered = sizes[-1]
        scan = _scan_events(self._stream(EVENTS), self.room or "", covered, _needed_nodes(sizes))
        valid = scan.count if scan.failure is None else scan.failure.seq - 1  # type: ignore[operator]
        self._check_tree([e for e in self.entries if e.checkpoint.size <= valid], scan.nodes)
        if scan.failure is not None:
            raise _Failed(scan.failure)
        if scan.count < covered:
            entry = next(e for e in self.entries if e.checkpoint.size > scan.count)
            _fail(f"{EVENTS} ends at seq {scan.count}, but checkpoint {entry.number} covers "
                  f"{entry.checkpoint.size} events: events are missing", seq=scan.count + 1,
                  checkpoint=entry.number)
        if scan.count > covered:
            _fail(f"seq {covered + 1} to {scan.count} are not covered by any signed checkpoint",
                  seq=covered + 1)
        self.digests[EVENTS] = (scan.digest, scan.length)
        self.events, self.root = scan.count, self.entries[-1].checkpoint.root.hex()
        if self.strict:
            self._check_canonical()

    def _check_tree(self, entries: list[_Entry], nodes: dict[tuple[int, int], bytes]) -> None:
        """Each checkpoint's root, and consistency with the one before. Requires their nodes in `nodes`."""
        if not entries:
            return
        merkle = MerkleLog(_NodeDict(nodes, entries[-1].checkpoint.size))
        previous: _Entry | None = None
        for entry in entries:
            size, root = entry.checkpoint.size, merkle.root(entry.checkpoint.size)
            if root != entry.checkpoint.root:
                low = previous.checkpoint.size if previous is not None else 0
                seq, why = self._first_bad_event(low, size)
                _fail(f"checkpoint {entry.number} (size {size}): the events hash to root {root.hex()}, the "
                      f"signed root is {entry.checkpoint.root.hex()}; {why}", seq=seq, checkpoint=entry.number)
            if previous is not None:
                old = previous.checkpoint
                proof = merkle.consistency_proof(old.size, size) if old.size < size else []
                try:
                    verify_consistency(old.size, size, proof, old.root, entry.checkpoint.root)
                except ProofError as error:
                    _fail(f"checkpoint {entry.number} does not extend checkpoint {previous.number}: {error}",
                          checkpoint=entry.number)
            previous = entry

    def _first_bad_event(self, low: int, high: int) -> tuple[int | None, str]:
        """(seq, why) of the first non-canonical event in (low, high], or (None, why). Requires low < high."""
        for seq, line in enumerate(_lines(self._stream(EVENTS)), start=1):
            if seq > high:
                break
            if seq > low:
                try:
                    decode_event(line)
                except CanonicalError as error:
                    return seq, f"event {seq} is not a canonical event ({error})"
        return None, f"an event of seq {low + 1} to {high} was altered"

    def _check_canonical(self) -> None:
        """--strict: each line is the canonical encoding of an event of this room with its seq."""
        last_at = 0
        for seq, line in enumerate(_lines(self._stream(EVENTS)), start=1):
            try:
                event = decode_event(line)
            except CanonicalError as error:
                _fail(f"event {seq} is not a canonical event ({error})", seq=seq)
            if event["seq"] != seq or event["room"] != self.room:
                _fail(f"line {seq} holds event {event['seq']} of room {event['room']!r}", seq=seq)
            if event["at"] < last_at:
                _fail(f"event {seq}: time {event['at']} is before the previous event's {last_at}", seq=seq)
            last_at = event["at"]

    # ---- the manifest ----------------------------------------------------------------------------

    def _manifest(self) -> None:
        """manifest.note is signed by the key and lists every file with its actual SHA-256 and length."""
        self._read(README)
        raw = self._read(MANIFEST)
        assert self.verifier is not None
        try:
            text = _verify_note(raw.decode("utf-8"), self.verifier)
        except (UnicodeDecodeError, CheckpointError) as error:
            _fail(f"{MANIFEST}: {error}", file=MANIFEST)
        assert self.room is not None and self.origin is not None
        expected = _manifest_text(self.room, self.origin, self.events, self.digests).split("\n")
        for line, want in zip(text.split("\n"), expected, strict=False):
            if line != want:
                name = want.split(" ")[1] if want.startswith("file ") else MANIFEST
                _fail(f"{name} does not match the manifest: it lists {line!r}, the bundle has {want!r}",
                      file=name)
        if text.count("\n") != len(expected) - 1:
            _fail(f"{MANIFEST} lists {text.count(chr(10))} lines, want {len(expected) - 1}", file=MANIFEST)

    # ---- on chain --------------------------------------------------------------------------------

    def _on_chain(self) -> None:
        """With rpc_check: every EVM anchor transaction exists on chain and carries this checkpoint."""
        if self.rpc_check is None:
            return
        for entry in self.entries:
            for anchoring in entry.anchorings:
                if anchoring.backend == "evm" and anchoring.status == "anchored":
                    assert anchoring.receipt is not None and self.room is not None
                    problem = self.rpc_check(entry.checkpoint, self.room, anchoring.receipt)
                    if problem is not None:
                        _fail(f"checkpoint {entry.number}: EVM anchor {anchoring.receipt['tx_hash']}: {problem}",
                              checkpoint=entry.number)
                    self.evm_checked += 1

    # ---- reading files ---------------------------------------------------------------------------

    def _read(self, name: str) -> bytes:
        """A whole (small) file, remembering its digest. Requires a name of FILES or MANIFEST."""
        if name not in self.reader.names():
            _fail(f"{name} is missing", file=name)
        try:
            data = self.reader.read(name, _LIMITS[name])
        except _TooLarge:
            _fail(f"{name} is larger than {_LIMITS[name]} bytes", file=name)
        except _DAMAGED as error:
            _fail(f"{name} is damaged in the zip: {error}", file=name)
        if name != MANIFEST:
            self.digests[name] = (hashlib.sha256(data).hexdigest(), len(data))
        return data

    def _json(self, name: str, keys: set[str]) -> dict[str, Any]:
        """A JSON object file with exactly `keys`. Requires a name of FILES."""
        raw = self._read(name)
        try:
            value = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError) as error:
            _fail(f"{name} is not valid JSON: {error}", file=name)
        _check_fields(value, keys, name, file=name)
        return value

    def _stream(self, name: str) -> Iterator[bytes]:
        """Chunks of a (large) file; a damaged zip member fails. Requires a name of FILES."""
        if name not in self.reader.names():
            _fail(f"{name} is missing", file=name)
        try:
            yield from self.reader.chunks(name)
        except _DAMAGED as error:
            _fail(f"{name} is damaged in the zip: {error}", file=name)


def _check_order(previous: _Entry, entry: _Entry) -> None:
    """Checkpoints never go back in size or time, and one size has one root. Requires both checked."""
    old, new = previous.checkpoint, entry.checkpoint
    if new.size < old.size:
        _fail(f"checkpoint {entry.number}: size {new.size} is below checkpoint {previous.number}'s {old.size}",
              checkpoint=entry.number)
    if new.size == old.size and new.root != old.root:
        _fail(f"checkpoint {entry.number}: a second root for size {new.size} (a fork)", checkpoint=entry.number)
    if new.time < old.time:
        _fail(f"checkpoint {entry.number}: time {new.time} is before checkpoint {previous.number}'s {old.time}",
              checkpoint=entry.number)


def _anchoring(value: Any, where: str, number: int) -> Anchoring:
    """A checked anchoring entry of checkpoint `number`. Requires nothing."""
    _check_fields(value, {"backend", "status", "attempts", "last_error", "receipt"}, f"{where} anchoring", number)
    backend, status, attempts, last_error, receipt = (
        value["backend"], value["status"], value["attempts"], value["last_error"], value["receipt"])
    if backend not in BACKENDS or status not in STATUSES:
        _fail(f"{where}: unknown anchoring {backend!r} / {status!r}", checkpoint=number)
    if type(attempts) is not int or attempts < 0 or not (last_error is None or isinstance(last_error, str)):
        _fail(f"{where}: bad attempts or last_error of the {backend} anchoring", checkpoint=number)
    if (status == "anchored") != (receipt is not None):
        _fail(f"{where}: the {backend} anchoring is {status} but has {'a' if receipt else 'no'} receipt",
              checkpoint=number)
    if receipt is not None:
        _check_fields(receipt, set(RECEIPT_FIELDS[backend]), f"{where} {backend} receipt", number)
        problem = _receipt_problem(backend, receipt)
        if problem:
            _fail(f"{where}: {backend} receipt: {problem}", checkpoint=number)
    return Anchoring(backend, status, attempts, last_error, receipt)


def _receipt_problem(backend: str, receipt: Mapping[str, Any]) -> str | None:
    """What is malformed in a receipt, or None. Requires the backend's fields to be present."""
    def natural(name: str) -> bool:
        return type(receipt[name]) is int and receipt[name] >= 0

    if receipt["backend"] != backend:
        return f"backend {receipt['backend']!r}"
    if backend == "local":
        ok = natural("index") and natural("time") and isinstance(receipt["hash"], str) \
            and _HEX64.fullmatch(receipt["hash"]) is not None
        return None if ok else "index, hash or time is malformed"
    ok = natural("block_number") and natural("chain_id") and all(
        isinstance(receipt[n], str) and _TX_HASH.fullmatch(receipt[n]) for n in ("tx_hash", "block_hash")
    ) and isinstance(receipt["from"], str) and _ADDRESS.fullmatch(receipt["from"]) is not None
    return None if ok else "tx_hash, block_hash, block_number, chain_id or from is malformed"


def _anchor(record: Any) -> Anchor:
    """The Anchor of an anchors.json record. Requires nothing."""
    if not isinstance(record, dict):
        _fail(f"{ANCHORS}: a record is not an object", file=ANCHORS)
    try:
        return Anchor.from_record(record)
    except AnchorError as error:
        _fail(f"{ANCHORS}: record {record.get('index')!r}: {error}", file=ANCHORS)


def _check_head(head: Any, last: Anchor | None) -> None:
    """The exported chain head is at or after the room's last record (and is it, at its index)."""
    if head is None:
        if last is not None:
            _fail(f"{ANCHORS}: records but no chain_head", file=ANCHORS)
        return
    _check_fields(head, {"index", "hash"}, f"{ANCHORS} chain_head", file=ANCHORS)
    if type(head["index"]) is not int or not isinstance(head["hash"], str) or not _HEX64.fullmatch(head["hash"]):
        _fail(f"{ANCHORS}: chain_head is malformed", file=ANCHORS)
    if last is not None and (head["index"] < last.index or
                             (head["index"] == last.index and head["hash"] != last.hash.hex())):
        _fail(f"{ANCHORS}: chain_head {head['index']} does not follow record {last.index}", file=ANCHORS)


def _check_fields(value: Any, keys: set[str], where: str, number: int | None = None,
                  file: str | None = None) -> None:
    """Refuse anything but an object with exactly `keys`. Requires nothing."""
    if not isinstance(value, dict) or set(value) != keys:
        found = sorted(value) if isinstance(value, dict) else type(value).__name__
        _fail(f"{where}: fields {found}, want {sorted(keys)}", checkpoint=number, file=file)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: a repeated key is an error. Requires nothing."""
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("a key is repeated")
    return value


def _no_constant(name: str) -> Any:
    """json hook: NaN and Infinity are not JSON. Requires nothing."""
    raise ValueError(f"{name} is not JSON")


def _numbers(numbers: Sequence[int]) -> str:
    """'1, 2, 3' (at most ten, then '...'). Requires nothing."""
    shown = ", ".join(map(str, numbers[:10]))
    return shown + (", ..." if len(numbers) > 10 else "")


def _verify_note(note: str, verifier: Verifier) -> str:
    """The text of a note carrying exactly one valid signature by `verifier`. Raises CheckpointError."""
    text = _note_text(note)
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


# ---- the event scan: the hot loop of a 1,000,000-event verification -----------------------------------


@dataclass
class _Scan:
    """What one pass over events.jsonl found."""

    count: int = 0
    nodes: dict[tuple[int, int], bytes] = field(default_factory=dict)
    failure: Failure | None = None
    digest: str = ""
    length: int = 0


def _scan_events(chunks: Iterator[bytes], room: str, covered: int, needed: dict[int, set[int]]) -> _Scan:
    """Check each line's seq and room from its tail, hash leaves 1..covered into the tree, and keep the
    nodes in `needed` (level -> indices). Stops at the first bad line. Requires covered >= 1.

    A canonical event ends with `,"room":<room>,"seq":<seq>}` (keys are sorted and these two come last).
    """
    sha256, digest, seq = hashlib.sha256, _Digest(), 0
    tail_of = (b',"room":' + json.dumps(room, ensure_ascii=False).encode("utf-8") + b',"seq":%d}').__mod__
    tree = _TreeBuilder(needed)
    scan = _Scan(nodes=tree.nodes)
    for lines, final in _line_batches(chunks, digest):
        first, bad = seq + 1, _first_bad_line(lines, seq + 1, tail_of) if not final else 0
        good = lines if bad is None else lines[:bad]
        tree.extend([sha256(b"\x00" + line).digest() for line in good[: max(0, covered - seq)]])
        seq = first + len(good) - 1
        if bad is not None:
            tree.finish()
            scan.count, scan.failure = seq + 1, _line_failure(lines[bad], seq + 1, room, unterminated=final)
            return scan
    tree.finish()
    scan.count, scan.digest, scan.length = seq, digest.sha256.hexdigest(), digest.length
    return scan


class _TreeBuilder:
    """RFC 6962 tree building from leaf hashes, keeping only the complete nodes in `needed`.

    Whole aligned blocks of 2**BLOCK leaves are hashed level by level (list comprehensions, about twice as
    fast as merging leaf by leaf); their roots, and the leaves left at the end, merge into a compact range.
    """

    BLOCK = 12

    def __init__(self, needed: dict[int, set[int]]):
        self.needed = needed
        self.sorted = {level: sorted(indices) for level, indices in needed.items()}
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.stack: list[tuple[int, bytes]] = []  # the compact range: (level, hash), largest first
        self.size = 0
        self.pending: list[bytes] = []

    def extend(self, leaves: list[bytes]) -> None:
        """Append leaf hashes (whole blocks now, the rest later). Requires finish() not called yet."""
        self.pending += leaves
        width = 1 << self.BLOCK
        whole = len(self.pending) // width * width
        for start in range(0, whole, width):
            self._block(self.pending[start : start + width])
        del self.pending[:whole]

    def finish(self) -> None:
        """Append the leaves left over. Requires nothing."""
        for leaf in self.pending:
            self._push(0, self.size, leaf)
            self.size += 1
        self.pending = []

    def _block(self, level: list[bytes]) -> None:
        """Hash one aligned block of 2**BLOCK leaf hashes. Requires size to be a multiple of the block."""
        sha256, start = hashlib.sha256, self.size
        self._keep(0, start, level)
        for height in range(1, self.BLOCK + 1):
            pairs = iter(level)
            level = [sha256(b"\x01" + left + right).digest() for left, right in zip(pairs, pairs, strict=False)]
            self._keep(height, start >> height, level)
        self.size += 1 << self.BLOCK
        self._push(self.BLOCK, start >> self.BLOCK, level[0])

    def _keep(self, level: int, first: int, hashes: list[bytes]) -> None:
        """Keep the needed nodes among `hashes`, nodes first, first + 1, ... of `level`."""
        indices = self.sorted.get(level)
        if not indices:
            return
        position, stop = bisect_left(indices, first), first + len(hashes)
        while position < len(indices) and indices[position] < stop:
            self.nodes[(level, indices[position])] = hashes[indices[position] - first]
            position += 1

    def _push(self, level: int, index: int, hash_: bytes) -> None:
        """Add the complete node (level, index) at the right end; merge equal-sized subtrees."""
        stack, needed = self.stack, self.needed
        if index in needed.get(level, ()):
            self.nodes[(level, index)] = hash_
        while stack and stack[-1][0] == level:
            hash_ = hashlib.sha256(b"\x01" + stack.pop()[1] + hash_).digest()
            level, index = level + 1, index >> 1
            if index in needed.get(level, ()):
                self.nodes[(level, index)] = hash_
        stack.append((level, hash_))


def _first_bad_line(lines: list[bytes], first: int, tail_of: Callable[[int], bytes]) -> int | None:
    """The position of the first line that is not an event of seq first, first + 1, ... (None: all are).

    Requires `tail_of(seq)` to give the tail every canonical event of the room with that seq ends with.
    """
    tails = [tail_of(s) for s in range(first, first + len(lines))]
    if all(map(bytes.endswith, lines, tails)) and all(map(bytes.startswith, lines, repeat(_HEAD))):
        return None
    return next(i for i, line in enumerate(lines) if not line.endswith(tails[i]) or not line.startswith(_HEAD))


class _Digest:
    """SHA-256 and length of the bytes fed to `update`."""

    def __init__(self) -> None:
        self.sha256, self.length = hashlib.sha256(), 0

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        self.length += len(data)


def _line_batches(chunks: Iterator[bytes], digest: _Digest) -> Iterator[tuple[list[bytes], bool]]:
    """(complete lines, is-last-batch) of a chunked file, hashing every byte into `digest`.

    A final line without its newline comes last as its own batch, flagged, so it fails as unterminated.
    """
    rest = b""
    for chunk in chunks:
        digest.update(chunk)
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        if lines:
            yield lines, False
    if rest:
        yield [rest], True


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Every line of a chunked file (the last one even without a newline). Requires nothing."""
    for lines, _ in _line_batches(chunks, _Digest()):
        yield from lines


def _line_failure(line: bytes, seq: int, room: str, unterminated: bool) -> Failure:
    """Why line `seq` is not event `seq` of `room`, in words. Requires a failing line."""
    if unterminated:
        return Failure(f"line {seq} of {EVENTS} has no final newline (truncated?)", seq=seq)
    match = re.search(rb',"seq":(0|[1-9][0-9]{0,15})}$', line)
    if match is not None and int(match.group(1)) != seq:
        return Failure(f"line {seq} of {EVENTS} holds seq {int(match.group(1))}: events are missing, "
                       "reordered or inserted", seq=seq)
    try:
        event = decode_event(line)
    except CanonicalError as error:
        return Failure(f"line {seq} of {EVENTS} is not a canonical event ({error})", seq=seq)
    return Failure(f"line {seq} of {EVENTS} is an event of room {event['room']!r}, not {room!r}", seq=seq)


def _needed_nodes(sizes: Sequence[int]) -> dict[int, set[int]]:
    """The tree nodes (level -> indices) that roots at `sizes` and consistency between successive sizes
    read. Found by running MerkleLog on a store that only records reads. Requires ascending sizes >= 1."""
    store = _RecordingStore(sizes[-1])
    merkle = MerkleLog(store)
    for previous, size in zip([0, *sizes], sizes, strict=False):
        merkle.root(size)
        if 0 < previous < size:
            merkle.consistency_proof(previous, size)
    needed: dict[int, set[int]] = {}
    for level, index in store.read:
        needed.setdefault(level, set()).add(index)
    return needed


class _RecordingStore:
    """A NodeStore of `size` leaves whose nodes are all zeros; it records which nodes were read."""

    def __init__(self, size: int):
        self.size = size
        self.read: set[tuple[int, int]] = set()

    def get(self, level: int, index: int) -> bytes:
        self.read.add((level, index))
        return bytes(32)

    def put(self, level: int, index: int, hash_: bytes) -> None:
        raise AssertionError("read-only")

    def leaf_count(self) -> int:
        return self.size


class _NodeDict:
    """A read-only NodeStore over the nodes a scan kept, for a tree of `size` leaves."""

    def __init__(self, nodes: dict[tuple[int, int], bytes], size: int):
        self.nodes = nodes
        self.size = size

    def get(self, level: int, index: int) -> bytes | None:
        return self.nodes.get((level, index))

    def put(self, level: int, index: int, hash_: bytes) -> None:
        raise AssertionError("read-only")

    def leaf_count(self) -> int:
        return self.size


# ---- reading a zip or a folder ---------------------------------------------------------------------


class _TooLarge(Exception):
    pass


class _Reader:
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
            self._names = sorted(p.name for p in folder.iterdir() if p.is_file())

    def names(self) -> list[str]:
        return self._names

    def duplicates(self) -> list[str]:
        return sorted({n for n in self._names if self._names.count(n) > 1})

    def read(self, name: str, limit: int) -> bytes:
        """The whole file, refusing more than `limit` bytes. Requires a present name."""
        data = b"".join(self._chunks(name, limit))
        return data

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
                        raise _TooLarge(name)
                    yield chunk
        except OSError as error:
            raise BundleError(f"{self.source}: cannot read {name}: {error.strerror or error}") from None

    def _open(self, name: str) -> IO[bytes]:
        if self._zip is not None:
            return self._zip.open(self._prefix + name)
        assert self._folder is not None
        return open(self._folder / name, "rb")

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._zip is not None:
            self._zip.close()


def _open_bundle(source: str | Path | bytes) -> _Reader:
    """A reader of the bundle at `source`. Raises BundleError if it is no bundle at all."""
    if isinstance(source, bytes | bytearray):
        label, opener = "<bytes>", lambda: zipfile.ZipFile(io.BytesIO(source))
    else:
        path = Path(source)
        label, opener = str(path), lambda: zipfile.ZipFile(path)
        if path.is_dir():
            reader = _Reader(label, None, path)
            return _known(reader)
        if not path.exists():
            raise BundleError(f"{label}: no such file or folder")
    try:
        reader = _Reader(label, opener(), None)
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError):
        raise BundleError(f"{label}: not a bundle (neither a zip file nor a folder)") from None
    except OSError as error:
        raise BundleError(f"{label}: cannot read: {error.strerror or error}") from None
    return _known(reader)


def _known(reader: _Reader) -> _Reader:
    """`reader`, if it holds at least one bundle file. Raises BundleError."""
    if not set(reader.names()) & {*FILES, MANIFEST}:
        raise BundleError(f"{reader.source}: not a bundle (it holds none of {', '.join((*FILES, MANIFEST))})")
    return reader

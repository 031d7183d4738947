"""Checking a ledger bundle offline: `verify_bundle(source) -> VerifyReport`.

The checks run in this order and stop at the first failure, which the report names (its seq, its
checkpoint, or the file):

1. key.vkey parses, key.pem holds the same key, and it is the pinned key if one is given;
2. checkpoints.json: every note is signed by that key for the room's origin and matches its fields; sizes
   and times never go back, and one size has one root;
3. anchors.json: every local anchor record hashes right, anchors a checkpoint of the bundle, is that
   checkpoint's receipt, and links to the record before it when that one is in the bundle too;
4. events.jsonl: line s is event s of the room (read from the line's tail), every leaf is hashed into the
   tree (sessions.ledger.bundle_tree), the tree at each checkpoint has the signed root, and the RFC 9162
   consistency proof from each checkpoint to the next, computed from the events, verifies;
5. manifest.note: signed by the key, and lists every file's actual SHA-256 and length;
6. with `rpc_check`: every EVM anchor transaction exists on chain with this checkpoint's data.

The report also lists the meshes the room's `mesh.provenance` events record (`MeshProvenance`: inputs, GLB
digests), which `glb_problem` compares with a GLB file. A consult record (DICOM SR) is checked against a
verified bundle by sessions/report.py.

It needs only the bundle (and, for step 6, a JSON-RPC node): no server, no database.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from sessions.ledger.anchors import Anchor, AnchorError, checkpoint_hash
from sessions.ledger.bundle import (
    ANCHORS,
    ANCHORS_FORMAT,
    BACKENDS,
    CHECKPOINTS,
    CHECKPOINTS_FORMAT,
    DAMAGED,
    EVENTS,
    FILES,
    KEY_PEM,
    KEY_VKEY,
    LIMITS,
    MANIFEST,
    README,
    RECEIPT_FIELDS,
    STATUSES,
    Anchoring,
    BundleReader,
    BundleTooLarge,
    manifest_text,
    open_bundle,
    public_key_pem,
    verify_note,
)
from sessions.ledger.bundle_tree import NodeDict, lines_of, needed_nodes, scan_events
from sessions.ledger.canonical import MAX_NESTING, CanonicalError, decode_event, too_deep
from sessions.ledger.merkle import ProofError, verify_consistency
from sessions.ledger.note import Checkpoint, CheckpointError, Verifier, parse_and_verify
from sessions.ledger.tree import MerkleLog

# rpc_check(checkpoint, room, receipt) -> None if the on-chain anchor matches, else the problem in words.
RpcCheck = Callable[[Checkpoint, str, Mapping[str, Any]], str | None]
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PROVENANCE = b'"kind":"mesh.provenance"'  # a canonical event's kind, as its line spells it
_TX_HASH = re.compile(r"0x[0-9a-f]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


@dataclass(frozen=True)
class Failure:
    """The first thing that does not hold: its seq and/or checkpoint (1-based, as in checkpoints.json)."""

    message: str
    seq: int | None = None
    checkpoint: int | None = None
    file: str | None = None

    def where(self) -> str:
        """'seq 17', 'checkpoint 3', 'seq 17 (checkpoint 3)' or the file."""
        if self.seq is not None and self.checkpoint is not None:
            return f"seq {self.seq} (checkpoint {self.checkpoint})"
        if self.seq is not None:
            return f"seq {self.seq}"
        if self.checkpoint is not None:
            return f"checkpoint {self.checkpoint}"
        return self.file or "bundle"


@dataclass(frozen=True)
class MeshProvenance:
    """One mesh of a mesh.provenance event (docs/ledger.md section 7): the event's seq, the mesh id, its preset,
    the SHA-256 over its inputs' content hashes, and the SHA-256 of each GLB variant (variant -> hex)."""

    seq: int
    mesh: str
    preset: str
    inputs: str | None
    glb: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "mesh": self.mesh, "preset": self.preset, "inputs": self.inputs,
                "glb": dict(self.glb)}


def glb_problem(meshes: Sequence[MeshProvenance], name: str, digest: str) -> tuple[MeshProvenance | None, str | None]:
    """(the mesh, None) if a GLB file called `name` whose SHA-256 is `digest` (hex) is a GLB the provenance
    records; else (the mesh it claims to be or None, the problem). A name whose stem is a recorded digest (a file
    of the server's store) must have exactly that content; a stem that is a recorded mesh id must be one of that
    mesh's variants; any other name must match some recorded digest."""
    stem = name.rsplit("/", 1)[-1].split(".", 1)[0]
    for mesh in meshes:
        variant = next((v for v, value in mesh.glb.items() if value == stem), None)
        if variant is not None:
            if digest == stem:
                return mesh, None
            return mesh, (f"mesh {mesh.mesh} (provenance at seq {mesh.seq}): its SHA-256 {digest} is not the "
                          f"{variant} GLB recorded when it entered the room ({stem}): the file changed after "
                          "the room opened")
    claimed = [m for m in meshes if stem == m.mesh]
    for mesh in claimed or meshes:
        if digest in mesh.glb.values():
            return mesh, None
    if not claimed:
        return None, f"its SHA-256 {digest} is no GLB of the room's mesh provenance"
    mesh = claimed[-1]
    recorded = ", ".join(f"{variant} {value}" for variant, value in sorted(mesh.glb.items()))
    return mesh, (f"mesh {mesh.mesh} (provenance at seq {mesh.seq}): its SHA-256 {digest} is none of the GLBs "
                  f"recorded when it entered the room ({recorded}): the file changed after the room opened")


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
    meshes: tuple[MeshProvenance, ...] = ()
    signed: tuple[Checkpoint, ...] = ()  # the verified checkpoints, in bundle order

    @property
    def ok(self) -> bool:
        """True when everything holds."""
        return self.failure is None

    def to_json(self) -> dict[str, Any]:
        """A JSON object for `theatrum verify --json`."""
        failure = None
        if self.failure is not None:
            failure = {"where": self.failure.where(), "message": self.failure.message, "seq": self.failure.seq,
                       "checkpoint": self.failure.checkpoint, "file": self.failure.file}
        return {"ok": self.ok, "source": self.source, "room": self.room, "origin": self.origin,
                "vkey": self.vkey, "events": self.events, "root": self.root, "checkpoints": self.checkpoints,
                "local_anchors": self.local_anchors, "evm_anchors": self.evm_anchors,
                "evm_checked": self.evm_checked, "unanchored": list(self.unanchored),
                "notes": list(self.notes), "meshes": [m.to_json() for m in self.meshes], "failure": failure}


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
    with open_bundle(source) as reader:
        run = _Verification(reader, rpc_check, trusted_key, strict)
        try:
            run.run()
        except _Failed as failed:
            return run.report(failed.failure)
        return run.report(None)


def event_lines(source: str | Path | bytes) -> list[bytes]:
    """The lines of a bundle's events.jsonl (line s is the leaf of seq s), for checks that need the events
    themselves (sessions/report.py). Requires a bundle that verify_bundle passed."""
    with open_bundle(source) as reader:
        return list(lines_of(reader.chunks(EVENTS)))


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

    reader: BundleReader
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
    meshes: list[MeshProvenance] = field(default_factory=list)
    marked: list[tuple[int, bytes]] = field(default_factory=list)  # (seq, line) of lines naming mesh.provenance

    def run(self) -> None:
        """Every check, in the order that names the earliest problem. Requires an open reader."""
        for name in self.reader.duplicates():
            _fail(f"the zip holds {name} more than once", file=name)
        for name in sorted(set(self.reader.names()) - {*FILES, MANIFEST}):  # nothing may ride along unsigned
            _fail(f"{name} is not a file of the bundle (its signed manifest does not list it)", file=name)
        self._key()
        self._checkpoints()
        self._anchors()
        self._events()
        self._provenance()
        self._manifest()
        self._on_chain()

    def report(self, failure: Failure | None) -> VerifyReport:
        """The report of this run."""
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
            tuple(notes), tuple(self.meshes), tuple(e.checkpoint for e in self.entries))

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
            same_size = next((e for e in by_hash.values() if e.checkpoint.size == anchor.size), None)
            _fail(f"{where} anchors checkpoint {anchor.checkpoint_hash.hex()} of size {anchor.size}, which is "
                  "not in the bundle" + (f": checkpoint {same_size.number} is another checkpoint of that size"
                                         if same_size else ""),
                  checkpoint=same_size.number if same_size else None, file=ANCHORS)
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
        scan = scan_events(self._stream(EVENTS), self.room or "", covered, needed_nodes(sizes), _PROVENANCE)
        self.marked = scan.marked
        valid = scan.count if scan.bad is None else scan.bad[0] - 1
        self._check_tree([e for e in self.entries if e.checkpoint.size <= valid], scan.nodes)
        if scan.bad is not None:
            _fail(scan.bad[1], seq=scan.bad[0])
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
        merkle = MerkleLog(NodeDict(nodes, entries[-1].checkpoint.size))
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
        for seq, line in enumerate(lines_of(self._stream(EVENTS)), start=1):
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
        for seq, line in enumerate(lines_of(self._stream(EVENTS)), start=1):
            try:
                event = decode_event(line)
            except CanonicalError as error:
                _fail(f"event {seq} is not a canonical event ({error})", seq=seq)
            if event["seq"] != seq or event["room"] != self.room:
                _fail(f"line {seq} holds event {event['seq']} of room {event['room']!r}", seq=seq)
            if event["at"] < last_at:
                _fail(f"event {seq}: time {event['at']} is before the previous event's {last_at}", seq=seq)
            last_at = event["at"]

    # ---- mesh provenance -------------------------------------------------------------------------

    def _provenance(self) -> None:
        """The meshes of every mesh.provenance event (the tree already vouches for the lines' bytes)."""
        for seq, line in self.marked:
            try:
                event = decode_event(line)
            except CanonicalError as error:
                _fail(f"event {seq} is not a canonical event ({error})", seq=seq)
            if event["kind"] != "mesh.provenance":
                continue
            meshes = event["data"].get("meshes")
            if not isinstance(meshes, list):
                _fail(f"event {seq}: mesh.provenance has no list of meshes", seq=seq)
            for mesh in meshes:
                self.meshes.append(_mesh_provenance(mesh, seq))

    # ---- the manifest ----------------------------------------------------------------------------

    def _manifest(self) -> None:
        """manifest.note is signed by the key and lists every file with its actual SHA-256 and length."""
        self._read(README)
        raw = self._read(MANIFEST)
        assert self.verifier is not None
        try:
            text = verify_note(raw.decode("utf-8"), self.verifier)
        except (UnicodeDecodeError, CheckpointError) as error:
            _fail(f"{MANIFEST}: {error}", file=MANIFEST)
        assert self.room is not None and self.origin is not None
        expected = manifest_text(self.room, self.origin, self.events, self.digests).split("\n")
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
            data = self.reader.read(name, LIMITS[name])
        except BundleTooLarge:
            _fail(f"{name} is larger than {LIMITS[name]} bytes", file=name)
        except DAMAGED as error:
            _fail(f"{name} is damaged in the zip: {error}", file=name)
        if name != MANIFEST:
            self.digests[name] = (hashlib.sha256(data).hexdigest(), len(data))
        return data

    def _json(self, name: str, keys: set[str]) -> dict[str, Any]:
        """A JSON object file with exactly `keys`. Requires a name of FILES."""
        raw = self._read(name)
        if too_deep(raw):
            _fail(f"{name} nests deeper than {MAX_NESTING} levels", file=name)
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
        except DAMAGED as error:
            _fail(f"{name} is damaged in the zip: {error}", file=name)


def _mesh_provenance(value: Any, seq: int) -> MeshProvenance:
    """One mesh entry of a mesh.provenance event at `seq`."""
    if not isinstance(value, dict):
        _fail(f"event {seq}: a mesh.provenance entry is not an object", seq=seq)
    mesh, preset, inputs, glb = (value.get(key) for key in ("mesh", "preset", "inputs", "glb"))
    well_formed = (isinstance(mesh, str) and mesh and isinstance(preset, str)
                   and (inputs is None or (isinstance(inputs, str) and _HEX64.fullmatch(inputs)))
                   and isinstance(glb, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                      and _HEX64.fullmatch(v) for k, v in glb.items()))
    if not well_formed:
        _fail(f"event {seq}: mesh.provenance entry {mesh!r} lacks mesh, preset, inputs or glb digests", seq=seq)
    return MeshProvenance(seq, mesh, preset, inputs, dict(glb))


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
    """A checked anchoring entry of checkpoint `number`."""
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
    """The Anchor of an anchors.json record, whose fields can be hashed."""
    if not isinstance(record, dict):
        _fail(f"{ANCHORS}: a record is not an object", file=ANCHORS)
    try:
        anchor = Anchor.from_record(record)
        anchor.computed_hash()
    except (AnchorError, CanonicalError) as error:
        _fail(f"{ANCHORS}: record {record.get('index')!r}: {error}", file=ANCHORS)
    return anchor


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
    """Refuse anything but an object with exactly `keys`."""
    if not isinstance(value, dict) or set(value) != keys:
        found = sorted(value) if isinstance(value, dict) else type(value).__name__
        _fail(f"{where}: fields {found}, want {sorted(keys)}", checkpoint=number, file=file)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: a repeated key is an error."""
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("a key is repeated")
    return value


def _no_constant(name: str) -> Any:
    """json hook: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not JSON")


def _numbers(numbers: Sequence[int]) -> str:
    """'1, 2, 3' (at most ten, then '...')."""
    shown = ", ".join(map(str, numbers[:10]))
    return shown + (", ..." if len(numbers) > 10 else "")


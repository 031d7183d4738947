"""The consult record: what a room's log says about its annotations at a signed checkpoint, and the check that
a record (the DICOM SR of server/services/sr.py, read back into these plain values) says exactly that.

A `Record` is a signed checkpoint of the room's log and one `ReportItem` per annotation alive at that checkpoint:
its type (point, measurement, stroke, note), label, note text, author pseudonym, the time of the event that last
changed it, its coordinates (patient LPS mm) and, for a measurement, its length; and the `Citation` of that
event: the room, the seq, the leaf hash and the RFC 9162 inclusion proof against the checkpoint.

- `record_items(events, proof)` lists the items the log implies after `events` (replayed as the room does).
- `check_record(record, room, leaves, checkpoints, verifier)` holds a record against a room's verified bundle:
  the checkpoint is one the bundle signed; every item is the annotation it cites, as the log has it at the
  checkpoint (same type, coordinates, label, text, author and time; a length equal to the logged one, and within
  0.01 mm of the length recomputed from the item's own coordinates), cited by its room, seq, leaf hash and a
  proof that verifies; no annotation alive at the checkpoint is missing, and none is there twice. Each problem
  names its item.

The SR stores coordinates as 32-bit floats (DICOM FL) and text without trailing spaces (DICOM's padding), so
those are compared as the SR can hold them: the logged coordinate rounded to a 32-bit float, the logged text
without trailing spaces. Everything else is compared exactly.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sessions.events import Event
from sessions.ledger.canonical import CanonicalError
from sessions.ledger.merkle import ProofError, verify_inclusion
from sessions.ledger.note import Checkpoint, CheckpointError, Verifier, parse_and_verify
from sessions.ops import AnnotationType
from sessions.protocol import apply_event
from sessions.state import Annotation, RoomState, StateError

LENGTH_TOLERANCE_MM = 0.01  # a length against the one recomputed from the item's own (32-bit) coordinates

Point = tuple[float, float, float]


@dataclass(frozen=True)
class Citation:
    """The event an item cites: its room, seq, leaf hash (hex) and inclusion proof (hex hashes, leaf upward)
    against the record's checkpoint."""

    room: str
    seq: int
    leaf_hash: str
    proof: tuple[str, ...]


@dataclass(frozen=True)
class ReportItem:
    """One annotation of a record. `label` is "" for a note, `text` "" for the others; `points` is () for a note
    without a position; `length_mm` is None except for a measurement."""

    annotation: str
    type: AnnotationType
    label: str
    text: str
    author: str
    at: int
    points: tuple[Point, ...]
    length_mm: float | None
    citation: Citation

    def name(self, number: int) -> str:
        """How a problem names the item: 'item 3 (a17 "cochlear height")', numbered from 1 in the record."""
        label = self.label or self.text.split("\n", 1)[0][:40]
        return f"item {number} ({self.annotation}{f' {label!r}' if label else ''})"


@dataclass(frozen=True)
class Record:
    """What a consult record claims: the signed checkpoint note it is cut at, and its items in record order."""

    checkpoint: str
    items: tuple[ReportItem, ...]


@dataclass(frozen=True)
class Problem:
    """Something of a record that is not what the log says; `where` names the item (or "the record")."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def record_items(events: Sequence[Event], proof: Callable[[int], Sequence[bytes]]) -> list[ReportItem]:
    """The items the log implies after `events` (seq 1 to n, in order), in creation order, each citing the event
    that last changed it with `proof(seq)` (its inclusion proof against the record's checkpoint). Raises
    StateError if the events do not replay."""
    state = RoomState()
    for event in events:
        apply_event(state, event)
    return [_item(annotation, events[annotation.version - 1], proof) for annotation in state.annotations.values()]


def _item(annotation: Annotation, cited: Event, proof: Callable[[int], Sequence[bytes]]) -> ReportItem:
    fields = annotation.fields
    points: tuple[Point, ...] = ()
    if annotation.type is AnnotationType.MEASUREMENT:
        points = (tuple(fields["a"]), tuple(fields["b"]))
    elif annotation.type is AnnotationType.STROKE:
        points = tuple(tuple(p) for p in fields["points"])
    elif "position" in fields:
        points = (tuple(fields["position"]),)
    citation = Citation(cited.room, cited.seq, cited.hash, tuple(h.hex() for h in proof(cited.seq)))
    return ReportItem(annotation.id, annotation.type, fields.get("label", ""), fields.get("text", ""),
                      annotation.author, cited.at, points, fields.get("length_mm"), citation)


def check_record(record: Record, room: str, leaves: Sequence[bytes], checkpoints: Iterable[Checkpoint],
                 verifier: Verifier) -> list[Problem]:
    """Every way `record` differs from the log of `room`, whose events are `leaves` (seq 1 first) and whose
    signed checkpoints are `checkpoints`, under `verifier`'s key. Empty if the record is exactly the log's.

    Requires a bundle that verified (sessions.ledger.verify): its leaves hash to its signed roots.
    """
    try:
        signed = parse_and_verify(record.checkpoint, verifier, verifier.name)
    except CheckpointError as error:
        foreign = [Problem(item.name(number), f"it cites room {item.citation.room!r}, not {room!r}")
                   for number, item in enumerate(record.items, start=1) if item.citation.room != room]
        return [Problem("the record", f"its checkpoint does not verify under the room's key: {error}"), *foreign]
    if not any((c.size, c.root) == (signed.size, signed.root) for c in checkpoints):
        return [Problem("the record", f"its checkpoint (size {signed.size}, root {signed.root.hex()}) is not one "
                                      f"of the bundle's signed checkpoints of room {room}")]
    if signed.size > len(leaves):
        return [Problem("the record", f"its checkpoint covers {signed.size} events; the bundle holds {len(leaves)}")]
    try:
        events = [Event.from_leaf(leaf) for leaf in leaves[: signed.size]]
        expected = {item.annotation: item for item in record_items(events, lambda seq: ())}
    except (CanonicalError, StateError) as error:
        return [Problem("the record", f"the bundle's events up to {signed.size} do not replay: {error}")]
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for number, item in enumerate(record.items, start=1):
        where = item.name(number)
        if item.annotation in seen:
            problems.append(Problem(where, f"annotation {item.annotation} is also item {seen[item.annotation]}: "
                                           "it is in the record twice"))
            continue
        seen[item.annotation] = number
        want = expected.get(item.annotation)
        if want is None:
            problems.append(Problem(where, f"room {room} has no annotation {item.annotation} at checkpoint "
                                           f"{signed.size}: the item is not in the log"))
            continue
        problems.extend(Problem(where, message) for message in _differences(item, want, room, signed, events))
    for annotation, want in expected.items():
        if annotation not in seen:
            problems.append(Problem(f"annotation {annotation}", f"the {want.type.value} made at seq "
                                    f"{want.citation.seq} is alive at checkpoint {signed.size} but missing from "
                                    "the record"))
    return problems


def _differences(item: ReportItem, want: ReportItem, room: str, signed: Checkpoint,
                 events: Sequence[Event]) -> list[str]:
    """What of `item` differs from `want` (the log's), including its citation and proof."""
    found = []
    cited = item.citation
    if cited.room != room:
        found.append(f"it cites room {cited.room!r}, not {room!r}")
    if cited.seq != want.citation.seq:
        found.append(f"it cites seq {cited.seq}; the annotation was last changed at seq {want.citation.seq}")
    elif cited.leaf_hash != want.citation.leaf_hash:
        found.append(f"it cites leaf hash {cited.leaf_hash}; event {cited.seq}'s is {want.citation.leaf_hash}")
    else:
        try:
            verify_inclusion(bytes.fromhex(cited.leaf_hash), cited.seq - 1, signed.size,
                             [_hash(h) for h in cited.proof], signed.root)
        except (ProofError, ValueError) as error:
            found.append(f"its inclusion proof of seq {cited.seq} does not verify against checkpoint "
                         f"{signed.size}: {error}")
    if item.type is not want.type:
        return [*found, f"it is a {item.type.value}; the log's {item.annotation} is a {want.type.value}"]
    if item.label != want.label.rstrip(" "):
        found.append(f"its label is {item.label!r}; the log's is {want.label!r}")
    if item.text != want.text.rstrip(" "):
        found.append(f"its text is {item.text!r}; the log's is {want.text!r}")
    if item.author != want.author:
        found.append(f"its author is {item.author!r}; the log's is {want.author!r}")
    if item.at != want.at:
        found.append(f"its time is {item.at} ms; event {want.citation.seq} was at {want.at} ms")
    found.extend(_point_differences(item.points, want.points))
    if want.length_mm is not None:
        found.extend(_length_differences(item, want))
    elif item.length_mm is not None:
        found.append(f"it has a length ({item.length_mm} mm); the log's {want.type.value} has none")
    return found


def _point_differences(points: Sequence[Point], want: Sequence[Point]) -> list[str]:
    if len(points) != len(want):
        return [f"it has {len(points)} point(s); the log's has {len(want)}"]
    for index, (got, logged) in enumerate(zip(points, want, strict=True), start=1):
        stored = tuple(float32(v) for v in logged)
        if tuple(got) != stored:
            return [f"point {index} is {list(got)} mm; the log's is {list(logged)} mm"]
    return []


def _length_differences(item: ReportItem, want: ReportItem) -> list[str]:
    if item.length_mm is None:
        return [f"it has no length; the log's measurement is {want.length_mm} mm"]
    found = []
    if item.length_mm != want.length_mm:
        found.append(f"its length is {item.length_mm} mm; the log's is {want.length_mm} mm")
    if len(item.points) == 2:
        recomputed = math.dist(*item.points)
        if not abs(recomputed - item.length_mm) <= LENGTH_TOLERANCE_MM:
            found.append(f"its length {item.length_mm} mm is not the distance of its own end points "
                         f"({recomputed:.6f} mm)")
    return found


def float32(value: float) -> float:
    """`value` as a 32-bit float holds it (DICOM FL, as the SR stores coordinates)."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def _hash(text: str) -> bytes:
    """A 32-byte hash from 64 hex digits. Raises ValueError otherwise."""
    value = bytes.fromhex(text)
    if len(value) != 32:
        raise ValueError(f"a proof hash has {len(value)} bytes, not 32")
    return value


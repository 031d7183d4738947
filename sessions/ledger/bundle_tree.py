"""The fast pass over events.jsonl: the hot loop of verifying a 1,000,000-event bundle.

`scan_events` reads the file in large chunks and, for every line, checks cheaply that it is event s of the
room (a canonical event ends with `,"room":<room>,"seq":<s>}`: keys are sorted and these two come last),
hashes it as an RFC 6962 leaf, and builds the tree, keeping only the nodes that the roots at the checkpoint
sizes and the consistency proofs between them read (`needed_nodes`); a MerkleLog over `NodeDict` then
computes those roots and proofs. Memory stays O(checkpoints x log n).
Whether each line is also the canonical encoding of its event is a slower, separate check (decode_event).
"""

from __future__ import annotations

import hashlib
import json
import re
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat

from sessions.ledger.canonical import CanonicalError, decode_event

EVENTS = "events.jsonl"
_HEAD = b'{"at":'  # every canonical event starts so: "at" is its first key


@dataclass
class EventScan:
    """What one pass over events.jsonl found: `bad` is (seq, why) of the first bad line, if any."""

    count: int = 0
    nodes: dict[tuple[int, int], bytes] = field(default_factory=dict)
    bad: tuple[int, str] | None = None
    digest: str = ""
    length: int = 0
    marked: list[tuple[int, bytes]] = field(default_factory=list)  # (seq, line) of the lines holding the marker


def scan_events(chunks: Iterator[bytes], room: str, covered: int, needed: dict[int, set[int]],
                marker: bytes = b"") -> EventScan:
    """Check each line's seq and room from its tail, hash leaves 1..covered into the tree, and keep the
    nodes in `needed` (level -> indices); keep the lines that contain `marker`, if given. Stops at the first bad
    line. Requires covered >= 1.

    A canonical event ends with `,"room":<room>,"seq":<seq>}` (keys are sorted and these two come last).
    """
    sha256, digest, seq = hashlib.sha256, _Digest(), 0
    tail_of = (b',"room":' + json.dumps(room, ensure_ascii=False).encode("utf-8") + b',"seq":%d}').__mod__
    tree = _TreeBuilder(needed)
    scan = EventScan(nodes=tree.nodes)
    for lines, final in _line_batches(chunks, digest):
        first, bad = seq + 1, _first_bad_line(lines, seq + 1, tail_of) if not final else 0
        good = lines if bad is None else lines[:bad]
        tree.extend([sha256(b"\x00" + line).digest() for line in good[: max(0, covered - seq)]])
        if marker and marker in b"\n".join(good):  # one search per batch: the per-line loop only when it hits
            scan.marked.extend((first + i, line) for i, line in enumerate(good) if marker in line)
        seq = first + len(good) - 1
        if bad is not None:
            tree.finish()
            scan.count, scan.bad = seq + 1, (seq + 1, _why_bad(lines[bad], seq + 1, room, unterminated=final))
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
        """Append the leaves left over."""
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


def lines_of(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Every line of a chunked file (the last one even without a newline)."""
    for lines, _ in _line_batches(chunks, _Digest()):
        yield from lines


def _why_bad(line: bytes, seq: int, room: str, unterminated: bool) -> str:
    """Why line `seq` is not event `seq` of `room`, in words. Requires a failing line."""
    if unterminated:
        return f"line {seq} of {EVENTS} has no final newline (truncated?)"
    match = re.search(rb',"seq":(0|[1-9][0-9]{0,15})}$', line)
    if match is not None and int(match.group(1)) != seq:
        return f"line {seq} of {EVENTS} holds seq {int(match.group(1))}: events are missing, reordered or inserted"
    try:
        event = decode_event(line)
    except CanonicalError as error:
        return f"line {seq} of {EVENTS} is not a canonical event ({error})"
    return f"line {seq} of {EVENTS} is an event of room {event['room']!r}, not {room!r}"


def needed_nodes(sizes: Sequence[int]) -> dict[int, set[int]]:
    """The tree nodes (level -> indices) that a MerkleLog of sizes[-1] leaves reads for the root at each of
    `sizes` and for the consistency proof between successive sizes. Requires ascending sizes >= 1.

    It walks the RFC 9162 split exactly as MerkleLog.consistency_proof does, collecting the perfect subtrees
    of each range instead of hashing them (tests/test_bundle.py checks it against a MerkleLog's reads).
    """
    ranges = [(0, sizes[-1])]  # MerkleLog reads the compact range of its size when it opens
    for previous, size in zip([0, *sizes], sizes, strict=False):
        ranges.append((0, size))
        if 0 < previous < size:
            ranges += _consistency_ranges(previous, size)
    needed: dict[int, set[int]] = {}
    for begin, end in ranges:
        while begin < end:  # the perfect subtrees of [begin, end), largest first
            level = (end - begin).bit_length() - 1
            needed.setdefault(level, set()).add(begin >> level)
            begin += 1 << level
    return needed


def _consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes make the consistency proof from size1 to size2. Requires 0 < size1 < size2."""
    ranges, begin, end, whole = [], 0, size2, True
    while end != size1:
        split = begin + (1 << ((end - begin - 1).bit_length() - 1))
        if size1 <= split:
            ranges.append((split, end))
            end = split
        else:
            ranges.append((begin, split))
            begin, whole = split, False
    if not whole:
        ranges.append((begin, end))
    return ranges


class NodeDict:
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


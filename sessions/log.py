"""The durable, ordered event log of a room, and its Merkle tree.

`EventLog(store, room)` appends events in seq order (seq n is Merkle leaf n - 1) and keeps the room's
`MerkleLog` (sessions/ledger/tree.py) in step: `head` is the current root in hex, `size` the number of events.
`append` returns only once the event row and its Merkle nodes are committed together, so the server may
ack and broadcast right after it; if the commit fails, nothing of the event remains.

Storage sits behind the small `LogStore` protocol: `MemoryLogStore` here for tests and ephemeral rooms,
and `sessions.sqlite_log.SqliteLogStore` (WAL; one row per event with its Merkle nodes). Another engine is a
new class, not a rewrite. A `LogStore` is used from one thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from sessions.events import Event
from sessions.ledger.canonical import CanonicalError
from sessions.ledger.merkle import leaf_hash
from sessions.ledger.tree import LedgerError, MemoryNodeStore, MerkleLog, NodeStore


class LogError(Exception):
    """The event log refuses an append or cannot be read."""


class LogCorruptError(LogError):
    """The stored events and the stored Merkle tree disagree, or seqs have gaps."""


class LogUnavailableError(LogError):
    """The store cannot write or read now (an I/O error, a locked database); nothing was appended."""


class LogFullError(LogUnavailableError):
    """The store has no space left; nothing was appended."""


class LogConflictError(LogError):
    """Another writer stored one of these seqs first (a store several processes share): nothing of `rooms` was
    appended (a commit of several rooms wrote the others')."""

    def __init__(self, message: str, rooms: frozenset[str] = frozenset()):
        super().__init__(message)
        self.rooms = rooms


class LogStore(Protocol):
    """Where room logs live: rows (room, seq, leaf bytes) and each room's Merkle node hashes."""

    def node_store(self, room: str) -> NodeStore:
        """The Merkle node store of `room`, writing into the same unit of commit as `append`."""
        ...

    def append(self, room: str, seq: int, leaf: bytes) -> None:
        """Stage the event row (room, seq, leaf). Durable only after `commit`. Requires a new seq, appended
        to the room's Merkle log just before (a store may keep the nodes in the same row).

        Raises LogError (LogUnavailableError when the store cannot write) and never the engine's own errors.
        """
        ...

    def commit(self) -> None:
        """Make everything staged durable before returning. Raises LogUnavailableError (LogFullError when
        the disk is full)."""
        ...

    def rollback(self) -> None:
        """Discard everything staged since the last commit."""
        ...

    def leaves(self, room: str, after: int = 0, until: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(seq, leaf) of `room` with after < seq <= until (until None: to the end), in seq order."""
        ...

    def last_seq(self, room: str) -> int:
        """The highest committed seq of `room`, or 0."""
        ...

    def rooms(self) -> list[str]:
        """Every room with at least one event, sorted."""
        ...


class MemoryLogStore:
    """A LogStore in memory (tests, ephemeral rooms). Node writes are not undone by `rollback`."""

    def __init__(self) -> None:
        self._rows: dict[str, list[bytes]] = {}
        self._nodes: dict[str, MemoryNodeStore] = {}
        self._staged: list[tuple[str, int, bytes]] = []

    def node_store(self, room: str) -> NodeStore:
        """The in-memory node store of `room`."""
        return self._nodes.setdefault(room, MemoryNodeStore())

    def append(self, room: str, seq: int, leaf: bytes) -> None:
        """Stage one row. Requires seq == last seq (committed and staged) + 1."""
        staged = sum(1 for r, _, _ in self._staged if r == room)
        if seq != len(self._rows.get(room, ())) + staged + 1:
            raise LogError(f"room {room}: seq {seq} is not the next seq")
        self._staged.append((room, seq, leaf))

    def commit(self) -> None:
        """Move the staged rows into the log."""
        for room, _, leaf in self._staged:
            self._rows.setdefault(room, []).append(leaf)
        self._staged.clear()

    def rollback(self) -> None:
        """Drop the staged rows."""
        self._staged.clear()

    def leaves(self, room: str, after: int = 0, until: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(seq, leaf) with after < seq <= until. Requires after >= 0."""
        rows = self._rows.get(room, [])
        stop = len(rows) if until is None else min(until, len(rows))
        for seq in range(after + 1, stop + 1):
            yield seq, rows[seq - 1]

    def last_seq(self, room: str) -> int:
        """The number of committed rows of `room`."""
        return len(self._rows.get(room, ()))

    def rooms(self) -> list[str]:
        """Rooms with committed rows, sorted."""
        return sorted(room for room, rows in self._rows.items() if rows)


class RowStore(Protocol):
    """A LogStore that keeps each event's Merkle nodes in the event's own row (SqliteLogStore, and the
    PostgreSQL store): node (level, index) is completed by the leaf of seq = (index + 1) << level, so it lives in
    that row, at position `level` of its `nodes` (level 0, the leaf hash, first)."""

    def row_node(self, room: str, seq: int, level: int) -> bytes | None:
        """Node `level` of the row of event `seq`, or None."""
        ...

    def last_seq(self, room: str) -> int:
        ...


class RowNodeStore:
    """The Merkle nodes of one room, kept in its event rows (see RowStore).

    `put` collects the nodes of the leaf being appended; the store's `append` writes them into the leaf's row
    (`take`). MerkleLog puts a leaf's nodes in level order, level 0 first, and never reads while appending.
    """

    def __init__(self, store: RowStore, room: str):
        self._store = store
        self._room = room
        self._pending: list[bytes] = []

    def get(self, level: int, index: int) -> bytes | None:
        """The hash of node (level, index), or None. Requires level, index >= 0."""
        node = self._store.row_node(self._room, (index + 1) << level, level)
        return node if node is not None and len(node) == 32 else None

    def put(self, level: int, index: int, hash_: bytes) -> None:
        """Collect node (level, index) for the next row. Requires the leaf's nodes in level order from 0."""
        if level != len(self._pending):
            raise LogError(f"room {self._room}: Merkle node of level {level} put after {len(self._pending)} nodes")
        self._pending.append(hash_)

    def take(self) -> bytes:
        """The collected nodes as one blob, and forget them."""
        nodes, self._pending = b"".join(self._pending), []
        return nodes

    def leaf_count(self) -> int:
        """The number of event rows of the room."""
        return self._store.last_seq(self._room)


class CapturingNodeStore:
    """A NodeStore that keeps only what the last append put (and nothing to read back)."""

    def __init__(self) -> None:
        self._nodes: list[bytes] = []

    def get(self, level: int, index: int) -> bytes | None:
        return None

    def put(self, level: int, index: int, hash_: bytes) -> None:
        self._nodes.append(hash_)

    def leaf_count(self) -> int:
        return 0

    def take(self) -> bytes:
        nodes, self._nodes = b"".join(self._nodes), []
        return nodes


def first_mismatch(rows: Iterable[tuple[int, bytes, bytes]], page: int) -> Iterator[int | None]:
    """Check stored rows (seq, leaf, nodes) of a RowStore against the nodes their leaves give: yields None after
    every `page` rows (so a caller can pause), then the first seq whose row holds other nodes, and ends; or just
    ends when every node is right."""
    capture = CapturingNodeStore()
    tree = MerkleLog(capture)
    for count, (seq, leaf, nodes) in enumerate(rows, start=1):
        tree.append(leaf_hash(leaf))
        if capture.take() != nodes:
            yield seq
            return
        if count % page == 0:
            yield None


class EventLog:
    """The ordered log of one room over a LogStore, with its Merkle tree. Not thread-safe."""

    def __init__(self, store: LogStore, room: str):
        self.store = store
        self.room = room
        try:
            self._tree = MerkleLog(store.node_store(room))
        except (LedgerError, ValueError) as error:
            raise LogCorruptError(f"room {room}: the stored Merkle tree is unreadable: {error}") from error
        size = store.last_seq(room)
        if size != self._tree.size:
            raise LogCorruptError(f"room {room}: {size} events but {self._tree.size} Merkle leaves")

    @property
    def size(self) -> int:
        """The number of events, which is also the last seq."""
        return self._tree.size

    @property
    def head(self) -> str:
        """The current Merkle root, hex."""
        return self._tree.root().hex()

    def append(self, event: Event) -> None:
        """Append `event` durably (row and Merkle nodes in one commit). Requires event.seq == size + 1."""
        self.stage(event)
        self.commit()

    def stage(self, event: Event) -> None:
        """Add `event` to the log's open transaction: its leaf is in the tree (size and root count it), its row is
        written at the next `commit`. Requires event.seq == size + 1. Raises LogError (and stages nothing)."""
        if event.room != self.room:
            raise LogError(f"event of room {event.room!r} appended to the log of {self.room!r}")
        if event.seq != self.size + 1:
            raise LogError(f"room {self.room}: event seq {event.seq}, expected {self.size + 1}")
        leaf = event.leaf()
        try:
            self._tree.append(leaf_hash(leaf))  # its nodes go into the row (SqliteLogStore)
            self.store.append(self.room, event.seq, leaf)
        except BaseException:
            self.rollback()
            raise

    def commit(self) -> None:
        """Make every staged event durable. Raises LogError (LogUnavailableError, LogFullError) after rolling
        the staged events back."""
        try:
            self.store.commit()
        except BaseException:
            self.rollback()
            raise

    def rollback(self) -> None:
        """Forget the staged events: the store's open transaction, and the tree's leaves past the durable ones.
        (A store shared by several rooms rolls back all of them: reopen the others' logs too.)"""
        self.store.rollback()
        self._tree = MerkleLog(self.store.node_store(self.room))  # drop the in-memory compact range

    def root(self, size: int | None = None) -> bytes:
        """The Merkle root of the first `size` events (default: all). Requires 0 <= size <= self.size."""
        return self._tree.root(size)

    def leaf_hash(self, seq: int) -> bytes:
        """The Merkle leaf hash of event `seq`. Requires 1 <= seq <= self.size."""
        return self._tree.leaf(seq - 1)

    def leaves(self, after: int = 0, until: int | None = None) -> Iterator[bytes]:
        """The leaf bytes of the events with after < seq <= until (until None: to the end), in order, read a
        page at a time. Requires after >= 0."""
        for _, leaf in self.store.leaves(self.room, after, until):
            yield leaf

    def inclusion_proof(self, seq: int, size: int | None = None) -> list[bytes]:
        """The RFC 9162 inclusion proof of event `seq` in the tree of the first `size` events (default: all).

        Requires 1 <= seq <= size <= self.size.
        """
        return self._tree.inclusion_proof(seq - 1, size)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """The RFC 9162 proof that the tree of `size2` events extends the tree of `size1`.

        Requires 0 < size1 <= size2 <= self.size.
        """
        return self._tree.consistency_proof(size1, size2)

    def events(self, after: int = 0, until: int | None = None) -> Iterator[Event]:
        """Events with after < seq <= until (until None: to the end), in order. Requires after >= 0."""
        for leaf in self.leaves(after, until):
            yield Event.from_leaf(leaf)

    def verified_events(self) -> Iterator[Event]:
        """Every event in order, checking seqs are 1..size and the leaves hash to the stored root.

        Raises LogCorruptError (at the end for a root mismatch) if the rows or the
        stored subtree roots that make up the current root were altered. Other stored nodes are only
        read by proofs, which a verifier checks against a signed checkpoint.
        """
        check = MerkleLog(_DiscardingNodeStore())
        for seq, leaf in self.store.leaves(self.room):
            if seq != check.size + 1:
                raise LogCorruptError(f"room {self.room}: seq {seq} follows seq {check.size}")
            try:
                event = Event.from_leaf(leaf)
            except CanonicalError as error:
                raise LogCorruptError(f"room {self.room}: row {seq} is not a canonical event") from error
            if event.seq != seq or event.room != self.room:
                raise LogCorruptError(
                    f"room {self.room}: row {seq} holds event {event.seq} of room {event.room!r}")
            check.append(leaf_hash(leaf))
            yield event
        if check.size != self.size or check.root() != self._tree.root():
            raise LogCorruptError(
                f"room {self.room}: events hash to {check.root().hex()} ({check.size} events), "
                f"the Merkle tree holds {self.head} ({self.size} leaves)"
            )


class _DiscardingNodeStore:
    """A NodeStore that keeps nothing: enough for MerkleLog.append and root() at the current size."""

    def get(self, level: int, index: int) -> bytes | None:
        """Nothing is kept."""
        return None

    def put(self, level: int, index: int, hash_: bytes) -> None:
        """Drop the node."""

    def leaf_count(self) -> int:
        """Always starts empty."""
        return 0

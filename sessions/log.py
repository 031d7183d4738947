"""The durable, ordered event log of a room, and its Merkle tree.

`EventLog(store, room)` appends events in seq order (seq n is Merkle leaf n - 1) and keeps the room's
`MerkleLog` (sessions/ledger.py) in step: `head` is the current root in hex, `size` the number of events.
`append` returns only once the event row and its Merkle nodes are committed together, so the server may
ack and broadcast right after it; if the commit fails, nothing of the event remains.

Storage sits behind the small `LogStore` protocol: `SqliteLogStore` (WAL; one row per event: room, seq,
leaf bytes; the Merkle nodes in the same database and transaction) and `MemoryLogStore` for tests and
ephemeral rooms. A Redis-backed store is a new class, not a rewrite. A `LogStore` is used from one thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from sessions.canonical import CanonicalError
from sessions.events import Event
from sessions.ledger import LedgerError, MemoryNodeStore, MerkleLog, NodeStore
from sessions.ledger_store import SqliteNodeStore, connect
from sessions.merkle import leaf_hash


class LogError(Exception):
    """The event log refuses an append or cannot be read."""


class LogCorruptError(LogError):
    """The stored events and the stored Merkle tree disagree, or seqs have gaps."""


class LogStore(Protocol):
    """Where room logs live: rows (room, seq, leaf bytes) and each room's Merkle node hashes."""

    def node_store(self, room: str) -> NodeStore:
        """The Merkle node store of `room`, writing into the same unit of commit as `append`."""
        ...

    def append(self, room: str, seq: int, leaf: bytes) -> None:
        """Stage the event row (room, seq, leaf). Durable only after `commit`. Requires a new seq."""
        ...

    def commit(self) -> None:
        """Make everything staged durable before returning."""
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
        """The in-memory node store of `room`. Requires nothing."""
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


_PAGE = 4096
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS room_events ("
    " room TEXT NOT NULL, seq INTEGER NOT NULL, leaf BLOB NOT NULL, PRIMARY KEY (room, seq)) WITHOUT ROWID",
)


class SqliteLogStore:
    """A LogStore in one SQLite database (WAL) for all rooms; Merkle nodes via SqliteNodeStore.

    `synchronous` is SQLite's durability setting: "FULL" (default) survives power loss once `commit`
    returns; "NORMAL" survives a process crash but may lose the last commits on power loss.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL"):
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, got {synchronous!r}")
        self.conn: sqlite3.Connection = connect(path)
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        for statement in _SCHEMA:
            self.conn.execute(statement)
        self.conn.commit()
        self._nodes: dict[str, SqliteNodeStore] = {}

    def node_store(self, room: str) -> NodeStore:
        """The node store of `room` (Merkle log name "room:<id>"). Requires nothing."""
        if room not in self._nodes:
            self._nodes[room] = SqliteNodeStore(self.conn, f"room:{room}")
        return self._nodes[room]

    def append(self, room: str, seq: int, leaf: bytes) -> None:
        """Insert the row in the open transaction. Requires a seq not yet stored for `room`."""
        try:
            self.conn.execute("INSERT INTO room_events (room, seq, leaf) VALUES (?, ?, ?)", (room, seq, leaf))
        except sqlite3.IntegrityError as error:
            raise LogError(f"room {room}: seq {seq} already exists") from error

    def commit(self) -> None:
        """Commit the open transaction (durable per `synchronous`)."""
        self.conn.commit()

    def rollback(self) -> None:
        """Roll back the open transaction."""
        self.conn.rollback()

    def leaves(self, room: str, after: int = 0, until: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(seq, leaf) with after < seq <= until, read in pages of _PAGE rows. Requires after >= 0."""
        bound = until if until is not None else 2**63 - 1
        while True:
            rows = self.conn.execute(
                "SELECT seq, leaf FROM room_events WHERE room = ? AND seq > ? AND seq <= ?"
                " ORDER BY seq LIMIT ?",
                (room, after, bound, _PAGE),
            ).fetchall()
            for seq, leaf in rows:
                if not isinstance(leaf, bytes):
                    raise LogCorruptError(f"room {room}: row {seq} holds {type(leaf).__name__}, not bytes")
                yield seq, leaf
            if len(rows) < _PAGE:
                return
            after = rows[-1][0]

    def last_seq(self, room: str) -> int:
        """MAX(seq) of `room`, or 0."""
        (last,) = self.conn.execute("SELECT MAX(seq) FROM room_events WHERE room = ?", (room,)).fetchone()
        return last or 0

    def rooms(self) -> list[str]:
        """Rooms with rows, sorted."""
        return [room for (room,) in self.conn.execute("SELECT DISTINCT room FROM room_events ORDER BY room")]

    def close(self) -> None:
        """Close the database. Requires no open transaction worth keeping."""
        self.conn.close()


class EventLog:
    """The ordered log of one room over a LogStore, with its Merkle tree. Not thread-safe."""

    def __init__(self, store: LogStore, room: str):
        self.store = store
        self.room = room
        try:
            self.merkle = MerkleLog(store.node_store(room))
        except (LedgerError, ValueError) as error:
            raise LogCorruptError(f"room {room}: the stored Merkle tree is unreadable: {error}") from error
        size = store.last_seq(room)
        if size != self.merkle.size:
            raise LogCorruptError(f"room {room}: {size} events but {self.merkle.size} Merkle leaves")

    @property
    def size(self) -> int:
        """The number of events, which is also the last seq."""
        return self.merkle.size

    @property
    def head(self) -> str:
        """The current Merkle root, hex."""
        return self.merkle.root().hex()

    def append(self, event: Event) -> None:
        """Append `event` durably (row and Merkle nodes in one commit). Requires event.seq == size + 1."""
        if event.room != self.room:
            raise LogError(f"event of room {event.room!r} appended to the log of {self.room!r}")
        if event.seq != self.size + 1:
            raise LogError(f"room {self.room}: event seq {event.seq}, expected {self.size + 1}")
        leaf = event.leaf()
        try:
            self.store.append(self.room, event.seq, leaf)
            self.merkle.append(leaf_hash(leaf))
            self.store.commit()
        except BaseException:
            self.store.rollback()
            self.merkle = MerkleLog(self.store.node_store(self.room))  # drop the in-memory compact range
            raise

    def events(self, after: int = 0, until: int | None = None) -> Iterator[Event]:
        """Events with after < seq <= until (until None: to the end), in order. Requires after >= 0."""
        for _, leaf in self.store.leaves(self.room, after, until):
            yield Event.from_leaf(leaf)

    def verified_events(self) -> Iterator[Event]:
        """Every event in order, checking seqs are 1..size and the leaves hash to the stored root.

        Requires nothing; raises LogCorruptError (at the end for a root mismatch) if the rows or the
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
        if check.size != self.size or check.root() != self.merkle.root():
            raise LogCorruptError(
                f"room {self.room}: events hash to {check.root().hex()} ({check.size} events), "
                f"the Merkle tree holds {self.head} ({self.size} leaves)"
            )


class _DiscardingNodeStore:
    """A NodeStore that keeps nothing: enough for MerkleLog.append and root() at the current size."""

    def get(self, level: int, index: int) -> bytes | None:
        """Nothing is kept. Requires nothing."""
        return None

    def put(self, level: int, index: int, hash_: bytes) -> None:
        """Drop the node. Requires nothing."""

    def leaf_count(self) -> int:
        """Always starts empty."""
        return 0

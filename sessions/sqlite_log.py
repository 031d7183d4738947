"""The room logs in one SQLite database (WAL): a `LogStore` with one row per event, its Merkle nodes included.

See `SqliteLogStore`. `_migrate_earlier_layout` moves a database of the earlier layout (events and Merkle
nodes in separate tables) into this one the first time it is opened.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from sessions.ledger.legacy_store import SqliteNodeStore
from sessions.ledger.merkle import leaf_hash
from sessions.ledger.sqlite import connect
from sessions.ledger.tree import MerkleLog
from sessions.log import (
    LogCorruptError,
    LogError,
    LogFullError,
    LogUnavailableError,
    RowNodeStore,
    first_mismatch,
)

_PAGE = 4096
PAGE_SIZE = 1024  # of a new database: a commit writes whole pages to the WAL, and an event row is ~200 bytes
WAL_CHECKPOINT_PAGES = 10_000  # copy the WAL back every ~10 MB: each page once per checkpoint
SEQ_BITS = 40  # a row id is (log number << SEQ_BITS) | seq: 2**40 events per room, 2**23 rooms per database
SQLITE_FULL = 13  # the result code of "database or disk is full"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS event_logs (id INTEGER PRIMARY KEY, room TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, leaf BLOB NOT NULL, nodes BLOB NOT NULL)",
)


class SqliteLogStore:
    """A LogStore in one SQLite database (WAL) for all rooms: one row per event, its Merkle nodes included.

    Table `event_logs` numbers the rooms. Table `events` holds row (id, leaf, nodes) with
    id = (room's log number << 40) | seq, so a room's events are one contiguous key range and each append
    lands at its right end. `nodes` holds the Merkle node hashes that event seq completes: level 0 (its leaf
    hash) first, then each parent up to level t, where 2**t is the largest power of two dividing seq (two
    hashes on average). Node (level, index) therefore lives in row seq = (index + 1) << level at byte offset
    32 * level. One integer-keyed row per event is the cheapest commit SQLite offers.

    The connection holds SQLite's lock for as long as it is open (locking_mode=EXCLUSIVE): the server is the
    database's only user, a second server on the same data folder fails at once instead of sharing the
    log, and each commit skips the shared-memory index and file locks of a shared WAL. A commit appends every
    page it changed to the WAL, so a new database gets 1 KB pages (PAGE_SIZE) instead of 4 KB, and the WAL is
    copied back every WAL_CHECKPOINT_PAGES pages rather than SQLite's default 1,000: an append-only log
    rewrites the same last page at every commit, so a longer WAL copies each page back once for many commits.

    `synchronous` is SQLite's durability setting: "FULL" (default) survives power loss once `commit`
    returns; "NORMAL" survives a process crash but may lose the last commits on power loss.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL", exclusive: bool = True):
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, got {synchronous!r}")
        self.conn: sqlite3.Connection = connect(path, exclusive=exclusive, page_size=PAGE_SIZE)
        self._nodes: dict[str, RowNodeStore] = {}
        self._logs: dict[str, int] = {}
        try:
            self.conn.execute(f"PRAGMA synchronous={synchronous}")
            self.conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            for statement in _SCHEMA:
                self.conn.execute(statement)
            self.conn.commit()
            _migrate_earlier_layout(self)
        except BaseException:
            self.conn.close()  # and with it the lock
            raise

    def row_id(self, room: str, seq: int, *, create: bool = True) -> int | None:
        """The row id of event `seq` of `room`. A room without a number gets one (in the open transaction),
        or with create=False the answer is None. Requires 0 <= seq < 2**40."""
        log = self._logs.get(room)
        if log is None:
            row = self.conn.execute("SELECT id FROM event_logs WHERE room = ?", (room,)).fetchone()
            if row is None and not create:
                return None
            if row is None:
                row = self.conn.execute("INSERT INTO event_logs (room) VALUES (?) RETURNING id", (room,)).fetchone()
            log = self._logs[room] = row[0]
        if not 0 <= seq < 1 << SEQ_BITS or log >= 1 << (63 - SEQ_BITS):
            raise LogError(f"room {room}: seq {seq} of log {log} is beyond what the database can number")
        return (log << SEQ_BITS) | seq

    def node_store(self, room: str) -> RowNodeStore:
        """The node store of `room`, which writes its nodes into the room's next `append`."""
        if room not in self._nodes:
            self._nodes[room] = RowNodeStore(self, room)
        return self._nodes[room]

    def row_node(self, room: str, seq: int, level: int) -> bytes | None:
        """Node `level` of the row of event `seq` (see the class docstring), or None."""
        row_id = self.row_id(room, seq, create=False)
        if row_id is None:
            return None
        row = self.conn.execute("SELECT substr(nodes, ?, 32) FROM events WHERE id = ?", (32 * level + 1, row_id)
                                ).fetchone()
        return row[0] if row is not None and isinstance(row[0], bytes) else None

    def append(self, room: str, seq: int, leaf: bytes) -> None:
        """Insert the row, with the nodes the room's MerkleLog put since the last append, in the open
        transaction. Requires a seq not yet stored for `room`, and its Merkle append done first."""
        nodes = self.node_store(room).take()
        try:
            self.conn.execute("INSERT INTO events (id, leaf, nodes) VALUES (?, ?, ?)",
                              (self.row_id(room, seq), leaf, nodes))
        except sqlite3.IntegrityError as error:
            raise LogError(f"room {room}: seq {seq} already exists") from error
        except sqlite3.Error as error:
            raise _unavailable(error, room) from error

    def commit(self) -> None:
        """Commit the open transaction (durable per `synchronous`)."""
        try:
            self.conn.commit()
        except sqlite3.Error as error:
            raise _unavailable(error, "the commit") from error

    def rollback(self) -> None:
        """Roll back the open transaction, and drop nodes not yet written into a row."""
        self.conn.rollback()
        self._logs.clear()  # a room numbered in the transaction is unnumbered again
        for nodes in self._nodes.values():
            nodes.take()

    def leaves(self, room: str, after: int = 0, until: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(seq, leaf) with after < seq <= until, read in pages of _PAGE rows. Requires after >= 0."""
        base = self.row_id(room, 0, create=False)
        if base is None:
            return
        last = base | ((1 << SEQ_BITS) - 1) if until is None else base + max(until, 0)
        first = base + after
        while True:
            rows = self.conn.execute(
                "SELECT id, leaf FROM events WHERE id > ? AND id <= ? ORDER BY id LIMIT ?", (first, last, _PAGE)
            ).fetchall()
            for row_id, leaf in rows:
                if not isinstance(leaf, bytes):
                    raise LogCorruptError(f"room {room}: row {row_id - base} holds {type(leaf).__name__}, "
                                          "not bytes")
                yield row_id - base, leaf
            if len(rows) < _PAGE:
                return
            first = rows[-1][0]

    def event_rows(self, room: str, after: int = 0) -> Iterator[tuple[int, bytes, bytes]]:
        """(seq, leaf, nodes) of every row of `room` after seq `after`, read in pages of _PAGE rows."""
        base = self.row_id(room, 0, create=False)
        if base is None:
            return
        first = base + after
        while True:
            rows = self.conn.execute("SELECT id, leaf, nodes FROM events WHERE id > ? AND id < ? ORDER BY id LIMIT ?",
                                     (first, base + (1 << SEQ_BITS), _PAGE)).fetchall()
            for row_id, leaf, nodes in rows:
                yield row_id - base, leaf if isinstance(leaf, bytes) else b"", nodes
            if len(rows) < _PAGE:
                return
            first = rows[-1][0]

    def nodes_mismatch(self, room: str) -> Iterator[int | None]:
        """Check every stored Merkle node of `room` against the nodes its leaves give (sessions.log.first_mismatch:
        None after each page, then the first seq whose row holds other nodes)."""
        return first_mismatch(self.event_rows(room), _PAGE)

    def last_seq(self, room: str) -> int:
        """The highest seq of `room`, or 0."""
        base = self.row_id(room, 0, create=False)
        if base is None:
            return 0
        (last,) = self.conn.execute("SELECT MAX(id) FROM events WHERE id > ? AND id <= ?",
                                    (base, base | ((1 << SEQ_BITS) - 1))).fetchone()
        return 0 if last is None else last - base

    def rooms(self) -> list[str]:
        """Rooms with rows, sorted."""
        query = ("SELECT room FROM event_logs WHERE EXISTS (SELECT 1 FROM events WHERE id > event_logs.id << ?"
                 " AND id < (event_logs.id + 1) << ?) ORDER BY room")
        return [room for (room,) in self.conn.execute(query, (SEQ_BITS, SEQ_BITS))]

    def close(self) -> None:
        """Close the database. Requires no open transaction worth keeping."""
        self.conn.close()


def _unavailable(error: sqlite3.Error, what: str) -> LogUnavailableError:
    """The log's own error for a failed write: LogFullError when SQLite says the disk is full."""
    full = getattr(error, "sqlite_errorcode", None) == SQLITE_FULL or "disk is full" in str(error)
    return (LogFullError if full else LogUnavailableError)(f"{what}: the room log cannot be written: {error}")


def _migrate_earlier_layout(store: SqliteLogStore) -> None:
    """Move a database of the earlier layout (table room_events (room, seq, leaf) and the Merkle nodes in
    table merkle_nodes) into tables event_logs and events, in one transaction.

    Re-appends each room's leaves through the store's own append path, and refuses (LogCorruptError, nothing
    changed) if they do not give the root that merkle_nodes holds for the room.
    """
    conn = store.conn
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "room_events" not in tables:
        return
    conn.execute("BEGIN")
    try:
        rooms = [room for (room,) in conn.execute("SELECT DISTINCT room FROM room_events ORDER BY room")]
        for room in rooms:
            old = MerkleLog(SqliteNodeStore(conn, f"room:{room}"))
            new = MerkleLog(store.node_store(room))
            rows = conn.execute("SELECT seq, leaf FROM room_events WHERE room = ? ORDER BY seq", (room,)).fetchall()
            for seq, leaf in rows:
                if seq != new.size + 1 or not isinstance(leaf, bytes):
                    raise LogCorruptError(f"room {room}: row {seq} follows row {new.size} or is not bytes")
                new.append(leaf_hash(leaf))
                store.append(room, seq, leaf)
            if new.size != old.size or new.root() != old.root():
                raise LogCorruptError(f"room {room}: its events do not hash to the root stored for them")
        for table in ("room_events", "merkle_nodes", "merkle_logs"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        store.commit()
    except BaseException:
        store.rollback()
        raise

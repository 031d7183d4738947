"""The ledger database (`ledger.sqlite`): the signed checkpoints of every room and their anchorings.

Table `checkpoints` holds one row per cut (room, size) with its origin, root, time and signed note; table
`anchorings` one row per (checkpoint, backend) with its status (pending, anchored, failed), attempts, last
error, next attempt (ms) and receipt. The local anchor chain (sessions.ledger.anchors) lives in the same
database. Every write commits.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.storage.errors import database_errors
from server.storage.postgres import PgConnection
from sessions.ledger.bundle import Anchoring
from sessions.ledger.dialects import POSTGRESQL, ddl, dialect_of, transaction
from sessions.ledger.note import Checkpoint

LEDGER_DB = "ledger.sqlite"
PENDING, ANCHORED, FAILED = "pending", "anchored", "failed"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS checkpoints (room TEXT NOT NULL, size INTEGER NOT NULL, origin TEXT NOT NULL,"
    " root BLOB NOT NULL, time INTEGER NOT NULL, note TEXT NOT NULL, PRIMARY KEY (room, size)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS anchorings (room TEXT NOT NULL, size INTEGER NOT NULL, backend TEXT NOT NULL,"
    " status TEXT NOT NULL, attempts INTEGER NOT NULL, last_error TEXT, next_attempt INTEGER NOT NULL,"
    " receipt TEXT, PRIMARY KEY (room, size, backend)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS anchorings_due ON anchorings (backend, status, next_attempt)",
)


@dataclass(frozen=True)
class StoredCheckpoint:
    """A cut checkpoint of `room` and its signed note."""

    room: str
    checkpoint: Checkpoint
    note: str

    @property
    def size(self) -> int:
        return self.checkpoint.size


@dataclass(frozen=True)
class AnchoringRow:
    """Where checkpoint (room, size) stands with one backend. `next_attempt` is ms since the epoch."""

    room: str
    size: int
    backend: str
    status: str
    attempts: int
    last_error: str | None
    next_attempt: int
    receipt: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        """The API view."""
        return {"backend": self.backend, "status": self.status, "attempts": self.attempts,
                "last_error": self.last_error,
                "next_attempt": self.next_attempt / 1000 if self.status == PENDING else None,
                "receipt": self.receipt}

    def anchoring(self) -> Anchoring:
        """The bundle's record of it."""
        return Anchoring(self.backend, self.status, self.attempts, self.last_error, self.receipt)


class CheckpointStore:
    """Tables `checkpoints` and `anchorings` of the ledger database. Every write commits; failures raise
    StorageError."""

    def __init__(self, conn: sqlite3.Connection | PgConnection):
        self.conn = conn
        dialect = dialect_of(conn)
        with database_errors("the ledger database"):
            if dialect == POSTGRESQL:
                conn.create_schema(ddl(statement, dialect) for statement in _SCHEMA)
            else:
                with conn:
                    for statement in _SCHEMA:
                        conn.execute(statement)

    def add(self, room: str, checkpoint: Checkpoint, note: str, backends: Sequence[str], now: int) -> bool:
        """Store a cut checkpoint and queue it for each backend, in one commit; False (and nothing stored) if the
        room already has a checkpoint of that size (another process sharing the database cut it first)."""
        with database_errors("the ledger database"), transaction(self.conn):
            cursor = self.conn.execute(
                "INSERT INTO checkpoints (room, size, origin, root, time, note) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (room, size) DO NOTHING",
                (room, checkpoint.size, checkpoint.origin, checkpoint.root, checkpoint.time, note))
            if cursor.rowcount == 0:
                return False
            self.conn.executemany(
                "INSERT INTO anchorings (room, size, backend, status, attempts, next_attempt)"
                " VALUES (?, ?, ?, ?, 0, ?)", [(room, checkpoint.size, b, PENDING, now) for b in backends])
        return True

    def checkpoints(self, room: str, up_to: int | None = None) -> list[StoredCheckpoint]:
        """The checkpoints of `room` with size <= up_to (None: all), oldest first."""
        return self._checkpoints("WHERE room = ? AND size <= ? ORDER BY size", (room, _bound(up_to)))

    def latest(self, room: str) -> StoredCheckpoint | None:
        """The room's largest checkpoint, or None."""
        rows = self._checkpoints("WHERE room = ? ORDER BY size DESC LIMIT 1", (room,))
        return rows[0] if rows else None

    def at(self, room: str, size: int) -> StoredCheckpoint | None:
        """The room's checkpoint at `size`, or None."""
        rows = self._checkpoints("WHERE room = ? AND size = ?", (room, size))
        return rows[0] if rows else None

    def covering(self, room: str, size: int) -> StoredCheckpoint | None:
        """The room's smallest checkpoint of at least `size` events, or None."""
        rows = self._checkpoints("WHERE room = ? AND size >= ? ORDER BY size LIMIT 1", (room, size))
        return rows[0] if rows else None

    def anchorings(self, room: str, up_to: int | None = None) -> list[AnchoringRow]:
        """The anchoring rows of `room` (sizes <= up_to), by size then backend."""
        return self._anchorings("WHERE room = ? AND size <= ? ORDER BY size, backend", (room, _bound(up_to)))

    def due(self, backend: str, now: int, limit: int = 32) -> list[AnchoringRow]:
        """Pending rows of `backend` whose next attempt is due, oldest first."""
        return self._anchorings("WHERE backend = ? AND status = ? AND next_attempt <= ?"
                                " ORDER BY next_attempt, room, size LIMIT ?", (backend, PENDING, now, limit))

    def next_due(self, backend: str) -> int | None:
        """When the next pending row of `backend` is due (ms), or None."""
        with database_errors("the ledger database"):
            (when,) = self.conn.execute("SELECT MIN(next_attempt) FROM anchorings WHERE backend = ? AND status = ?",
                                        (backend, PENDING)).fetchone()
        return when

    def claim(self, row: AnchoringRow, until: int) -> bool:
        """Take a due row for one attempt, until `until` (ms): False if another process took it first (its
        next_attempt moved). An attempt that never records its outcome (its process died) is due again then."""
        with database_errors("the ledger database"), transaction(self.conn):
            cursor = self.conn.execute(
                "UPDATE anchorings SET next_attempt = ? WHERE room = ? AND size = ? AND backend = ? AND status = ?"
                " AND next_attempt = ?", (until, row.room, row.size, row.backend, PENDING, row.next_attempt))
        return cursor.rowcount == 1

    def succeeded(self, row: AnchoringRow, receipt: Mapping[str, Any]) -> None:
        """Record the receipt: anchored."""
        with database_errors("the ledger database"), transaction(self.conn):
            self.conn.execute(
                "UPDATE anchorings SET status = ?, attempts = attempts + 1, last_error = NULL, receipt = ?"
                " WHERE room = ? AND size = ? AND backend = ?",
                (ANCHORED, json.dumps(dict(receipt), sort_keys=True), row.room, row.size, row.backend))

    def failed(self, row: AnchoringRow, error: str, next_attempt: int, give_up: bool) -> None:
        """Record a failed attempt: retried at `next_attempt`, or `failed` if `give_up`."""
        with database_errors("the ledger database"), transaction(self.conn):
            self.conn.execute(
                "UPDATE anchorings SET status = ?, attempts = attempts + 1, last_error = ?, next_attempt = ?"
                " WHERE room = ? AND size = ? AND backend = ?",
                (FAILED if give_up else PENDING, error[:500], next_attempt, row.room, row.size, row.backend))

    def requeue_failed(self, now: int) -> int:
        """Put every failed row back in the queue for a new round of attempts; returns how many."""
        with database_errors("the ledger database"), transaction(self.conn):
            cursor = self.conn.execute(
                "UPDATE anchorings SET status = ?, attempts = 0, next_attempt = ? WHERE status = ?",
                (PENDING, now, FAILED))
        return cursor.rowcount

    def _checkpoints(self, clause: str, parameters: tuple[Any, ...]) -> list[StoredCheckpoint]:
        with database_errors("the ledger database"):
            rows = self.conn.execute(
                "SELECT room, size, origin, root, time, note FROM checkpoints " + clause, parameters).fetchall()
        return [StoredCheckpoint(room, Checkpoint(origin, size, bytes(root), at), note)
                for room, size, origin, root, at, note in rows]

    def _anchorings(self, clause: str, parameters: tuple[Any, ...]) -> list[AnchoringRow]:
        with database_errors("the ledger database"):
            rows = self.conn.execute(
                "SELECT room, size, backend, status, attempts, last_error, next_attempt, receipt FROM anchorings "
                + clause, parameters).fetchall()
        return [AnchoringRow(*row[:7], json.loads(row[7]) if row[7] is not None else None) for row in rows]


def _bound(up_to: int | None) -> int:
    return 2**63 - 1 if up_to is None else up_to

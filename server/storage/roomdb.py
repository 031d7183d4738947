"""The room database: one SQLite file (WAL) with every room's event log, the rooms table and the room codes; or,
with several server processes, the same tables in their shared PostgreSQL database (PostgresLogStore's logs).

The event logs are `sessions.sqlite_log.SqliteLogStore`'s tables (``events``, rows with their Merkle nodes). This
module adds two small tables to the same database and connection, so a new room's row, its codes and its
``room.open`` event commit together (the log's append is the commit).

Durability is ``synchronous=NORMAL``: in WAL mode a commit survives a crash of the server process and the
event loop never waits for an fsync; a power loss may lose the last commits but never corrupts the log.
Everything here runs on the event loop's thread (one connection, short statements). The SQLite connection holds
the database's lock while the server runs (see SqliteLogStore): one server per data folder. In PostgreSQL a new
room's row and codes are staged writes of the log store, so they still commit with its room.open.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from server.storage.errors import CorruptStoreError, database_errors, quick_check
from server.storage.postgres import PgConnection, is_postgres_url
from server.storage.postgres_log import PostgresLogStore
from sessions.ledger.dialects import POSTGRESQL, SQLITE, ddl
from sessions.replay import TrackPoint
from sessions.roles import Role
from sessions.sqlite_log import SqliteLogStore

ROOM_DB = "rooms.sqlite"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS rooms (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL,"
    " invite_exp INTEGER NOT NULL, names TEXT NOT NULL, generations TEXT NOT NULL DEFAULT '{}')",
    "CREATE TABLE IF NOT EXISTS room_codes ("
    " code TEXT PRIMARY KEY, room TEXT NOT NULL, role TEXT NOT NULL, exp INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS room_codes_room ON room_codes(room)",
    # The avatars' downsampled track (~2 Hz per participant) for replays: presence, not part of the Merkle log.
    "CREATE TABLE IF NOT EXISTS pose_track ("
    " id INTEGER PRIMARY KEY, room TEXT NOT NULL, at INTEGER NOT NULL, participant TEXT NOT NULL, pose TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS pose_track_room_at ON pose_track(room, at)",
)


@dataclass(frozen=True)
class RoomRecord:
    """A room's row: when it was made (ms), when its role invites expire (s), their display names by role, and
    the generation of each role's link (a kick moves the kicked participant's role to the next one)."""

    id: str
    created_at: int
    invite_exp: int
    names: dict[str, str]
    generations: dict[str, int] = field(default_factory=dict)

    def generation(self, role: Role) -> int:
        return self.generations.get(role.value, 0)


@dataclass(frozen=True)
class RoomCode:
    """A typed code standing for (room, role) until `exp` (seconds since the epoch)."""

    code: str
    room: str
    role: Role
    exp: int


class RoomDatabase:
    """The logs (`logs`, a SqliteLogStore or PostgresLogStore) and the room rows, in one database. Failures raise
    StorageError."""

    def __init__(self, location: Path | str):
        """Open (or create) the room database: a SQLite file, or a PostgreSQL URL. Raises CorruptStoreError for
        a damaged file, StorageError (LogError) if PostgreSQL cannot be reached."""
        self.logs: SqliteLogStore | PostgresLogStore
        if is_postgres_url(location):
            self.path = "the room database (PostgreSQL)"
            self.dialect = POSTGRESQL
            with database_errors(ROOM_DB):
                conn = PgConnection(str(location), autocommit=True, name="theatrum-rooms")
                self.logs = PostgresLogStore(conn)
                conn.create_schema(ddl(statement, POSTGRESQL) for statement in _SCHEMA)
            self._db = conn
            return
        path = Path(location)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.dialect = SQLITE
        self.logs = SqliteLogStore(path, synchronous="NORMAL")
        self._db = self.logs.conn
        try:
            quick_check(self._db, path)
        except CorruptStoreError:
            self.logs.close()
            raise
        for statement in _SCHEMA:
            self._db.execute(statement)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(rooms)")}
        if "generations" not in columns:  # a database from before role links had generations
            self._db.execute("ALTER TABLE rooms ADD COLUMN generations TEXT NOT NULL DEFAULT '{}'")
        self._db.commit()

    def records(self) -> list[RoomRecord]:
        """Every room, oldest first."""
        rows = self._rows("SELECT id, created_at, invite_exp, names, generations FROM rooms ORDER BY created_at, id")
        return [RoomRecord(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4])) for r in rows]

    def stage_room(self, record: RoomRecord) -> None:
        """Insert the room's row in the open transaction; it commits with the room's first event."""
        names = json.dumps(record.names, sort_keys=True)
        self._stage("INSERT INTO rooms (id, created_at, invite_exp, names) VALUES (?, ?, ?, ?)",
                    (record.id, record.created_at, record.invite_exp, names))

    def next_generation(self, record: RoomRecord, role: Role, code: RoomCode | None) -> RoomRecord:
        """Move `role` of the room to its next link generation and replace its room code (None: it has
        none), in one commit; returns the updated record."""
        generations = {**record.generations, role.value: record.generation(role) + 1}
        with self._transaction() as db:
            db.execute("UPDATE rooms SET generations = ? WHERE id = ?",
                       (json.dumps(generations, sort_keys=True), record.id))
            db.execute("DELETE FROM room_codes WHERE room = ? AND role = ?", (record.id, role.value))
            if code is not None:
                db.execute("INSERT INTO room_codes (code, room, role, exp) VALUES (?, ?, ?, ?)",
                           (code.code, code.room, code.role.value, code.exp))
        return replace(record, generations=generations)

    def stage_code(self, code: RoomCode) -> None:
        """Insert a code in the open transaction. Requires a code that `code_taken` says is free."""
        self._stage("INSERT INTO room_codes (code, room, role, exp) VALUES (?, ?, ?, ?) ON CONFLICT (code) DO UPDATE"
                    " SET room = excluded.room, role = excluded.role, exp = excluded.exp",
                    (code.code, code.room, code.role.value, code.exp))

    def code_taken(self, code: str, now: float) -> bool:
        """Whether `code` stands for a room now (an expired code is free again)."""
        rows = self._rows("SELECT exp FROM room_codes WHERE code = ?", (code,))
        return bool(rows) and rows[0][0] > now

    def code(self, code: str) -> RoomCode | None:
        """The code's row, expired or not, or None."""
        rows = self._rows("SELECT code, room, role, exp FROM room_codes WHERE code = ?", (code,))
        return RoomCode(rows[0][0], rows[0][1], Role(rows[0][2]), rows[0][3]) if rows else None

    def codes_of(self, room: str) -> dict[Role, RoomCode]:
        """The codes of `room` by role."""
        rows = self._rows("SELECT code, room, role, exp FROM room_codes WHERE room = ?", (room,))
        return {Role(r[2]): RoomCode(r[0], r[1], Role(r[2]), r[3]) for r in rows}

    def delete_codes(self, room: str) -> None:
        """Forget the codes of `room` (it closed), committed."""
        self._write("DELETE FROM room_codes WHERE room = ?", (room,))

    def add_track(self, room: str, points: Sequence[TrackPoint]) -> None:
        """Record avatar track points of `room`, committed. Requires no staged rows (they would commit too)."""
        if points:
            self._write("INSERT INTO pose_track (room, at, participant, pose) VALUES (?, ?, ?, ?)",
                        [(room, p.at, p.participant, json.dumps(p.pose, separators=(",", ":"))) for p in points],
                        many=True)

    def track(self, room: str, since: int = 0) -> list[TrackPoint]:
        """The recorded track of `room` from server time `since` (ms), in time order."""
        rows = self._rows("SELECT at, participant, pose FROM pose_track WHERE room = ? AND at >= ?"
                          " ORDER BY at, id", (room, since))
        return [TrackPoint(at, participant, json.loads(pose)) for at, participant, pose in rows]

    def record(self, room: str) -> RoomRecord | None:
        """The row of one room, or None."""
        rows = self._rows("SELECT id, created_at, invite_exp, names, generations FROM rooms WHERE id = ?", (room,))
        return RoomRecord(rows[0][0], rows[0][1], rows[0][2], json.loads(rows[0][3]), json.loads(rows[0][4])) \
            if rows else None

    def rollback(self) -> None:
        """Drop whatever was staged."""
        with database_errors(ROOM_DB):
            if self.dialect == POSTGRESQL:
                self.logs.rollback()
            else:
                self._db.rollback()

    def _rows(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple]:
        with database_errors(ROOM_DB):
            return self._db.execute(sql, parameters).fetchall()

    def _stage(self, sql: str, parameters: Sequence[Any]) -> None:
        """A write that commits with the next commit of the logs (a new room's row with its room.open)."""
        with database_errors(ROOM_DB):
            if self.dialect == POSTGRESQL:
                self.logs.stage_write(sql, tuple(parameters))
            else:
                self._db.execute(sql, parameters)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """Statements committed together now. Requires nothing staged (SQLite would commit it too)."""
        with database_errors(ROOM_DB):
            if self.dialect == POSTGRESQL:
                with self._db.transaction():
                    yield self._db
            else:
                try:
                    yield self._db
                except BaseException:
                    self._db.rollback()
                    raise
                self._db.commit()

    def _write(self, sql: str, parameters: Sequence[Any], *, many: bool = False) -> None:
        """One statement (or one per row of `parameters`, `many`), committed now."""
        with self._transaction() as db:
            (db.executemany if many else db.execute)(sql, parameters)

    def close(self) -> None:
        """Close the database."""
        self.logs.close()

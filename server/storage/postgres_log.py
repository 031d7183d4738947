"""The room logs in PostgreSQL: a `LogStore` with one row per event, its Merkle nodes included, keyed (log, seq).

Table `event_logs` numbers the rooms; table `events` holds (log, seq, leaf, nodes) with primary key (log, seq),
and `nodes` the Merkle node hashes that event completes (see sessions.log.RowStore), as in SQLite. Staged rows
wait in memory and `commit` writes them in one statement and one transaction: the hub's group commit costs two
round trips however many ops one turn of the loop brought.

The primary key is the fence between processes. Two processes that both believe they own a room (a stale owner
woken after another took its room over) can never both write seq n: the second commit fails with
LogConflictError, nothing of it is written, and its caller reopens the room from what is stored.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg

from server.storage.postgres import PgConnection
from sessions.ledger.dialects import POSTGRESQL, ddl
from sessions.log import (
    LogConflictError,
    LogCorruptError,
    LogError,
    LogFullError,
    LogUnavailableError,
    RowNodeStore,
    first_mismatch,
)

_PAGE = 4096
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS event_logs (id INTEGER PRIMARY KEY, room TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS events (log INTEGER NOT NULL REFERENCES event_logs (id), seq INTEGER NOT NULL,"
    " leaf BLOB NOT NULL, nodes BLOB NOT NULL, PRIMARY KEY (log, seq))",
)


class PostgresLogStore:
    """A LogStore in PostgreSQL for all rooms (see the module docstring). Used from one thread, on a connection
    in autocommit mode: reads are single statements, and `commit` writes in one transaction."""

    def __init__(self, conn: PgConnection):
        self.conn = conn
        self._nodes: dict[str, RowNodeStore] = {}
        self._logs: dict[str, int] = {}
        self._staged: list[tuple[str, int, bytes, bytes]] = []
        self._writes: list[tuple[str, tuple]] = []
        try:
            conn.create_schema(ddl(statement, POSTGRESQL) for statement in SCHEMA)
        except psycopg.Error as error:
            raise LogUnavailableError(f"the room logs' tables cannot be created: {error}") from error

    def node_store(self, room: str) -> RowNodeStore:
        """The node store of `room`, which writes its nodes into the room's next `append`."""
        if room not in self._nodes:
            self._nodes[room] = RowNodeStore(self, room)
        return self._nodes[room]

    def append(self, room: str, seq: int, leaf: bytes) -> None:
        """Stage the row with the nodes the room's MerkleLog put since the last append; written at `commit`.
        Requires a seq not yet stored for `room`, and its Merkle append done first."""
        self._staged.append((room, seq, leaf, self.node_store(room).take()))

    def stage_write(self, sql: str, parameters: tuple = ()) -> None:
        """A write of another table (a new room's row) to make in the next commit's transaction, before the
        rows: it commits with them or not at all."""
        self._writes.append((sql, tuple(parameters)))

    def commit(self) -> None:
        """Write every staged row (and staged write) in one transaction.

        If another process stored one of a room's seqs first, that room's rows are dropped, the others are
        written, and LogConflictError names the rooms that lost (their callers reopen them from what is
        stored). Raises LogFullError / LogUnavailableError if the database cannot take them; then nothing is
        written."""
        staged, self._staged = self._staged, []
        writes, self._writes = self._writes, []
        lost: set[str] = set()
        while staged or writes:
            try:
                with self.conn.transaction():
                    for sql, parameters in writes:
                        self.conn.execute(sql, parameters)
                    rows = [(self._log(room), seq, leaf, nodes) for room, seq, leaf, nodes in staged]
                    self.conn.executemany("INSERT INTO events (log, seq, leaf, nodes) VALUES (?, ?, ?, ?)", rows)
                break
            except psycopg.errors.UniqueViolation as error:
                self._forget()
                taken = self._taken(staged)
                if not taken:
                    raise LogUnavailableError(f"the room logs cannot be written: {error}") from error
                lost |= taken
                staged = [row for row in staged if row[0] not in taken]
            except psycopg.errors.DiskFull as error:
                self._forget()
                raise LogFullError(f"the room logs cannot be written: {error}") from error
            except psycopg.Error as error:
                self._forget()
                raise LogUnavailableError(f"the room logs cannot be written: {error}") from error
        if lost:
            raise LogConflictError(f"room(s) {', '.join(sorted(lost))}: another process wrote these seqs first",
                                   rooms=frozenset(lost))

    def _taken(self, staged: list[tuple[str, int, bytes, bytes]]) -> set[str]:
        """The rooms of `staged` whose first staged seq is already stored (by another process)."""
        first: dict[str, int] = {}
        for room, seq, _, _ in staged:
            first.setdefault(room, seq)
        return {room for room, seq in first.items() if self.last_seq(room) >= seq}

    def rollback(self) -> None:
        """Drop every staged row and write, and the nodes not yet written into one."""
        self._staged.clear()
        self._writes.clear()
        self._forget()

    def _forget(self) -> None:
        """Forget what a rolled-back transaction may have made (log numbers) or left pending (nodes)."""
        self._logs.clear()
        for nodes in self._nodes.values():
            nodes.take()

    def _log(self, room: str, *, create: bool = True) -> int | None:
        """The number of `room`'s log (made, in the open transaction, if it has none and `create`)."""
        log = self._logs.get(room)
        if log is None:
            if create:
                self.conn.execute("INSERT INTO event_logs (room) VALUES (?) ON CONFLICT (room) DO NOTHING", (room,))
            row = self.conn.execute("SELECT id FROM event_logs WHERE room = ?", (room,)).fetchone()
            if row is None:
                return None
            log = self._logs[room] = row[0]
        return log

    def leaves(self, room: str, after: int = 0, until: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(seq, leaf) with after < seq <= until, read in pages. Requires after >= 0."""
        for seq, leaf, _ in self.event_rows(room, after, until):
            yield seq, leaf

    def event_rows(self, room: str, after: int = 0, until: int | None = None) -> Iterator[tuple[int, bytes, bytes]]:
        """(seq, leaf, nodes) of the stored rows with after < seq <= until, in pages of _PAGE rows."""
        log = self._read(lambda: self._log(room, create=False))
        if log is None:
            return
        last = (1 << 62) if until is None else until
        while True:
            rows = self._read(lambda first=after: self.conn.execute(
                "SELECT seq, leaf, nodes FROM events WHERE log = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (log, first, last, _PAGE)).fetchall())
            for seq, leaf, nodes in rows:
                yield seq, bytes(leaf), bytes(nodes)
            if len(rows) < _PAGE:
                return
            after = rows[-1][0]

    def last_seq(self, room: str) -> int:
        """The highest stored seq of `room`, or 0."""
        log = self._read(lambda: self._log(room, create=False))
        if log is None:
            return 0
        (last,) = self._read(lambda: self.conn.execute("SELECT MAX(seq) FROM events WHERE log = ?", (log,)
                                                       ).fetchone())
        return last or 0

    def rooms(self) -> list[str]:
        """Rooms with rows, sorted."""
        rows = self._read(lambda: self.conn.execute(
            "SELECT room FROM event_logs l WHERE EXISTS (SELECT 1 FROM events e WHERE e.log = l.id) ORDER BY room"
        ).fetchall())
        return [room for (room,) in rows]

    def row_node(self, room: str, seq: int, level: int) -> bytes | None:
        """Node `level` of the row of event `seq`, or None."""
        log = self._read(lambda: self._log(room, create=False))
        if log is None:
            return None
        row = self._read(lambda: self.conn.execute(
            "SELECT substring(nodes from ? for 32) FROM events WHERE log = ? AND seq = ?", (32 * level + 1, log, seq)
        ).fetchone())
        return bytes(row[0]) if row is not None and row[0] is not None else None

    def nodes_mismatch(self, room: str) -> Iterator[int | None]:
        """As SqliteLogStore.nodes_mismatch (sessions.log.first_mismatch)."""
        return first_mismatch(self.event_rows(room), _PAGE)

    def _read(self, query):
        """Run a read; a failure is the log's own error."""
        try:
            return query()
        except psycopg.errors.DataCorrupted as error:
            raise LogCorruptError(f"the room logs are damaged: {error}") from error
        except psycopg.Error as error:
            raise LogUnavailableError(f"the room logs cannot be read: {error}") from error

    def close(self) -> None:
        self.conn.close()


__all__ = ["LogError", "PostgresLogStore"]

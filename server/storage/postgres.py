"""PostgreSQL for the stores: a psycopg connection that speaks the part of `sqlite3.Connection` they use.

With `THEATRUM_DATABASE_URL=postgresql://…` the catalog, the room database (rooms, codes, avatar tracks and the
room logs) and the ledger database (checkpoints, anchorings, the local anchor chain) live in one PostgreSQL
database that several server processes share; the stores keep their SQL and their methods, so the engine is a
swap of connections, not a rewrite (DESIGN.md, "the path past one machine"). The driver is psycopg 3 in its
blocking mode, like sqlite3: the event loop's calls are short, and the room logs commit once per turn of the
loop for every op of that turn (the hub's group commit), not once per op.

The SQL is written for both engines: `?` placeholders (turned into psycopg's), `ON CONFLICT` upserts, table
definitions in SQLite's words that sessions.ledger.dialects.ddl says in PostgreSQL's. What cannot be said in both
(triggers, pragmas) is chosen by the connection's `dialect`. Stores that several processes share use their
connection in autocommit mode (no transaction left open between statements) and write in `transaction()` blocks.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg.rows import RowMaker, tuple_row

from sessions.ledger.dialects import POSTGRESQL

SCHEMA_LOCK = 0x7468656174  # the advisory lock taken while tables are created ("theat")
_PLACEHOLDER = re.compile(r"\?")
_IMMEDIATE = re.compile(r"^\s*BEGIN IMMEDIATE\b", re.IGNORECASE)


def is_postgres_url(location: object) -> bool:
    """Whether a store's location is a PostgreSQL URL (THEATRUM_DATABASE_URL) rather than a file."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def _sql(text: str) -> str:
    """SQL written with `?` placeholders, for psycopg (`%s`; a literal % doubled)."""
    text = _IMMEDIATE.sub("BEGIN", text)
    return _PLACEHOLDER.sub("%s", text.replace("%", "%%"))


class Row(tuple):
    """A row read by name or by position, as sqlite3.Row: `row["id"]`, `row[0]`, `dict(row)`, unpacking."""

    _names: tuple[str, ...] = ()

    def keys(self) -> tuple[str, ...]:
        return self._names

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self._names.index(key))
            except ValueError:
                raise IndexError(f"no column {key!r}") from None
        return tuple.__getitem__(self, key)


def named_row(cursor: psycopg.Cursor) -> RowMaker[Row]:
    """psycopg's row factory for Row."""
    kind = _row_type(tuple(column.name for column in cursor.description or ()))

    def make(values: Sequence[Any]) -> Row:
        return kind(values)

    return make


@functools.lru_cache(maxsize=256)
def _row_type(names: tuple[str, ...]) -> type[Row]:
    return type("Row", (Row,), {"_names": names, "__slots__": ()})


class PgConnection:
    """A PostgreSQL connection used like a sqlite3 one: `execute` with `?`, `with conn:` commits or rolls back,
    `commit`, `rollback`. `rows="named"` gives rows readable by name too (as sqlite3.Row), else tuples. With
    `autocommit`, each statement commits unless the caller sends BEGIN (as the catalog does with SQLite's
    isolation_level=None) or opens a `transaction()`."""

    dialect = POSTGRESQL

    def __init__(self, url: str, *, rows: str = "tuple", autocommit: bool = False, name: str = "theatrum"):
        self.url = url
        self._conn = psycopg.connect(url, autocommit=autocommit, application_name=name,
                                     row_factory=named_row if rows == "named" else tuple_row)

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> psycopg.Cursor:
        return self._conn.execute(_sql(sql), tuple(parameters))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> psycopg.Cursor:
        cursor = self._conn.cursor()
        cursor.executemany(_sql(sql), [tuple(row) for row in rows])
        return cursor

    def executescript(self, script: str) -> None:
        """Run `;`-separated statements (schema creation)."""
        for statement in (s.strip() for s in script.split(";")):
            if statement:
                self._conn.execute(_sql(statement))

    def create_schema(self, statements: Iterable[str]) -> None:
        """Run table definitions (already in PostgreSQL's words) in one transaction, serialised across processes
        by an advisory lock: several servers starting together must not race on CREATE ... IF NOT EXISTS."""
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for statement in statements:
                self._conn.execute(_sql(statement))

    def transaction(self) -> contextlib.AbstractContextManager:
        """A transaction block: committed at its end, rolled back if it raises (psycopg's)."""
        return self._conn.transaction()

    def commit(self) -> None:
        self._conn.commit()

    def rollback(self) -> None:
        self._conn.rollback()

    def close(self) -> None:
        self._conn.close()

    @property
    def in_transaction(self) -> bool:
        return self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def __enter__(self) -> PgConnection:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self._conn.commit()
        else:
            self._conn.rollback()

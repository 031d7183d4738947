"""SQL dialects: the stores write their tables once, in SQLite's words, and `ddl` says them in PostgreSQL's.

The stores (the room logs, the ledger's checkpoints and anchor chain, the catalog, the room database) run on
SQLite in the embedded mode and on PostgreSQL when several processes share one database. Their queries are
written to mean the same on both (`?` placeholders, which the PostgreSQL connection rewrites; `ON CONFLICT`
upserts). Table definitions differ in a few words only, which `ddl` translates:

- `BLOB` is `BYTEA`; `REAL` is `DOUBLE PRECISION`; `INTEGER` is `BIGINT` (SQLite's integers are 64-bit);
- `INTEGER PRIMARY KEY` (SQLite's row id, numbered by the database when left out) is `BIGSERIAL PRIMARY KEY`;
- `WITHOUT ROWID` is SQLite's storage option and has no PostgreSQL meaning.

What cannot be said in both (triggers, pragmas) is chosen by the store from `dialect`.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

SQLITE, POSTGRESQL = "sqlite", "postgresql"

_WORDS = (
    (re.compile(r"\bINTEGER PRIMARY KEY\b"), "BIGSERIAL PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
    (re.compile(r"\s*\bWITHOUT ROWID\b"), ""),
)


def ddl(statement: str, dialect: str) -> str:
    """`statement` (a table or index definition in SQLite's words) in `dialect`. Requires a known dialect."""
    if dialect == SQLITE:
        return statement
    if dialect != POSTGRESQL:
        raise ValueError(f"unknown SQL dialect {dialect!r}")
    for pattern, word in _WORDS:
        statement = pattern.sub(word, statement)
    return statement


def dialect_of(conn: object) -> str:
    """The dialect of a store's connection: its `dialect` attribute (the PostgreSQL connection's), else SQLite."""
    return getattr(conn, "dialect", SQLITE)


def transaction(conn: Any) -> contextlib.AbstractContextManager:
    """A block of `conn`'s statements committed together at its end and rolled back if it raises: the
    PostgreSQL connection's `transaction()`, or the sqlite3 connection used as a context manager."""
    return conn.transaction() if dialect_of(conn) == POSTGRESQL else conn

"""The stores' own errors, so that callers never handle a database engine's exceptions.

`StorageError` says a store could not read or write; `StorageFullError` that the disk is full (the API
answers 507). `database_errors` turns the engines' exceptions (sqlite3's, psycopg's) into these at each store's
boundary.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg

SQLITE_FULL = 13


class StorageError(Exception):
    """A store could not read or write: an I/O error, a locked, corrupt or unreadable database."""


class StorageFullError(StorageError):
    """There is no space left to write."""


class CorruptStoreError(StorageError):
    """A stored file is damaged or no longer holds what was written: the server will not vouch for it."""


def quick_check(conn: sqlite3.Connection, path: Path | str) -> None:
    """Raise CorruptStoreError naming `path` unless SQLite's quick_check passes (one pass over the database's
    pages, without the index-to-table cross checks of integrity_check: a second or less for a large file). A
    PostgreSQL database checks its own pages (checksums): nothing to do here."""
    if getattr(conn, "dialect", "sqlite") != "sqlite":
        return
    try:
        rows = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as error:
        raise CorruptStoreError(f"{path}: the database is damaged ({error}); restore it from a backup "
                                "(docs/operations.md)") from error
    if rows != ["ok"]:
        raise CorruptStoreError(f"{path}: the database is damaged ({'; '.join(rows)}); restore it from a backup "
                                "(docs/operations.md)")


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` (sqlite3, psycopg or OS) says the disk is full."""
    if isinstance(error, psycopg.errors.DiskFull):
        return True
    if isinstance(error, sqlite3.Error):
        return getattr(error, "sqlite_errorcode", None) == SQLITE_FULL or "disk is full" in str(error)
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def database_errors(what: str) -> Iterator[None]:
    """Raise the database engines' errors inside the block as StorageError (StorageFullError for a full disk),
    naming `what`."""
    try:
        yield
    except (sqlite3.Error, psycopg.Error) as error:
        kind = StorageFullError if is_disk_full(error) else StorageError
        raise kind(f"{what}: {error}") from error

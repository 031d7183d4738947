"""Opening the SQLite databases of the ledger and the room logs: WAL, synchronous=NORMAL, optional lock."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def connect(path: str | Path, *, exclusive: bool = False, page_size: int | None = None) -> sqlite3.Connection:
    """Open (or create) a database in WAL mode with synchronous=NORMAL. Requires a writable path.

    exclusive: hold the database lock while the connection is open (locking_mode=EXCLUSIVE, set before WAL
    is first used, so SQLite keeps the WAL index in private memory and each commit skips the file locks).
    page_size: the page size of a new database (an existing one keeps its own).
    """
    conn = sqlite3.connect(path)
    if page_size is not None:
        conn.execute(f"PRAGMA page_size={int(page_size)}")
    if exclusive:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn

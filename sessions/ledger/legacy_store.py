"""The earlier SQLite node layout of the Merkle log, kept only to migrate a database written by it.

Many logs (one per room) share one database; each is named, and numbered in `merkle_logs`. A node's row id
is (log number << 40) | its post-order position. Post-order is the order in which an append-only tree
completes its nodes, so every append writes at the right end of its log's key range (usually one page per
commit). This allows 2**40 nodes (about 5e11 events) per log and 2**23 logs per database.

The store never commits node writes: the caller decides the durability unit (one commit per event, or a
group commit per batch). Today's layout keeps the nodes in the event rows (sessions/sqlite_log.py).
"""

from __future__ import annotations

import sqlite3

POSITION_BITS = 40
MAX_LOGS = 2 ** (63 - POSITION_BITS)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS merkle_logs (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS merkle_nodes (id INTEGER PRIMARY KEY, hash BLOB NOT NULL)",
)


class NodeStoreFullError(Exception):
    """A log or the database has used up its key range."""


class SqliteNodeStore:
    """The node hashes of the log `name`, in tables merkle_logs / merkle_nodes of `conn`."""

    def __init__(self, conn: sqlite3.Connection, name: str = "default"):
        was_in_transaction = conn.in_transaction
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute("INSERT OR IGNORE INTO merkle_logs (name) VALUES (?)", (name,))
        if not was_in_transaction:
            conn.commit()
        (log,) = conn.execute("SELECT id FROM merkle_logs WHERE name = ?", (name,)).fetchone()
        if log >= MAX_LOGS:
            raise NodeStoreFullError(f"log {name!r} is number {log}; a database holds {MAX_LOGS} logs")
        self._base = log << POSITION_BITS
        self._conn = conn
        self.name = name

    def get(self, level: int, index: int) -> bytes | None:
        """The hash of node (level, index), or None. Requires level, index >= 0."""
        row = self._conn.execute(
            "SELECT hash FROM merkle_nodes WHERE id = ?", (self._base + post_order(level, index),)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, level: int, index: int, hash_: bytes) -> None:
        """Store node (level, index) in the open transaction. Requires the node to be new."""
        position = post_order(level, index)
        if position >> POSITION_BITS:
            raise NodeStoreFullError(f"log {self.name!r} is full ({2**POSITION_BITS} nodes)")
        self._conn.execute(
            "INSERT INTO merkle_nodes (id, hash) VALUES (?, ?)", (self._base + position, hash_)
        )

    def leaf_count(self) -> int:
        """How many leaf hashes are stored (nodes are written in post-order, without gaps)."""
        row = self._conn.execute(
            "SELECT id FROM merkle_nodes WHERE id >= ? AND id < ? ORDER BY id DESC LIMIT 1",
            (self._base, self._base + (1 << POSITION_BITS)),
        ).fetchone()
        return 0 if row is None else leaves_for_node_count(row[0] - self._base + 1)


def post_order(level: int, index: int) -> int:
    """Post-order position of node (level, index) in an append-only tree. Requires level, index >= 0."""
    before = index << level  # leaves left of this subtree; they own 2*before - popcount(before) nodes
    return 2 * before - before.bit_count() + (2 << level) - 2


def leaves_for_node_count(nodes: int) -> int:
    """The leaf count n whose tree has `nodes` = 2n - popcount(n) nodes. Requires such an n to exist."""
    n = nodes // 2
    while 2 * n - n.bit_count() < nodes:
        n += 1
    if 2 * n - n.bit_count() != nodes:
        raise ValueError(f"{nodes} nodes is not the node count of any append-only tree")
    return n

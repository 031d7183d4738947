"""Anchors: checkpoint roots put where the server cannot quietly rewrite them.

`AnchorBackend` is what every anchoring target implements (the embedded local chain here; an EVM chain
through web3.py in the server). The local anchor chain is an append-only hash chain in SQLite: record i
carries the hash of record i-1, and its own hash is SHA-256 of its canonical JSON (prev_hash included), so
rewriting any past record changes every later hash. Publishing or witnessing the head hash pins them all.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import astuple, dataclass, replace
from typing import Any, Protocol

from sessions.ledger.canonical import canonical_json
from sessions.ledger.dialects import POSTGRESQL, ddl, dialect_of, transaction
from sessions.ledger.note import Checkpoint

GENESIS = bytes(32)  # prev_hash of record 0
APPEND_ATTEMPTS = 5  # tries of an append that other processes keep beating to the next index
_HASH_FIELDS = ("checkpoint_hash", "prev_hash", "root")


class AnchorError(ValueError):
    """An anchor record is malformed."""


class AnchorChainError(AnchorError):
    """The anchor chain is broken at record `index`."""

    def __init__(self, index: int, problem: str):
        super().__init__(f"anchor {index}: {problem}")
        self.index = index
        self.problem = problem


@dataclass(frozen=True)
class Anchor:
    """One record of the local anchor chain. `time` is ms since the Unix epoch (UTC)."""

    index: int
    room: str
    size: int
    root: bytes
    checkpoint_hash: bytes
    time: int
    prev_hash: bytes
    hash: bytes

    def body(self) -> dict[str, Any]:
        """The hashed fields as JSON values (hashes in lowercase hex)."""
        return {
            "index": self.index,
            "room": self.room,
            "size": self.size,
            "root": self.root.hex(),
            "checkpoint_hash": self.checkpoint_hash.hex(),
            "time": self.time,
            "prev_hash": self.prev_hash.hex(),
        }

    def record(self) -> dict[str, Any]:
        """The JSON record: the body plus its hash."""
        return {**self.body(), "hash": self.hash.hex()}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Anchor:
        """The Anchor of a JSON record (as written by `record`). Requires a mapping."""
        fields = ("index", "room", "size", "root", "checkpoint_hash", "time", "prev_hash", "hash")
        if set(record) != set(fields):
            raise AnchorError(f"anchor record fields {sorted(record)} differ from {sorted(fields)}")
        try:
            values = {name: _hash_from_hex(record[name]) for name in (*_HASH_FIELDS, "hash")}
        except ValueError as error:
            raise AnchorError(f"anchor record has a bad hash: {error}") from error
        for name in ("index", "size", "time"):
            if type(record[name]) is not int or record[name] < 0:
                raise AnchorError(f"anchor record {name} is not a non-negative integer")
        if not isinstance(record["room"], str):
            raise AnchorError("anchor record room is not a string")
        return cls(record["index"], record["room"], record["size"], time=record["time"], **values)

    def computed_hash(self) -> bytes:
        """SHA-256 of the canonical JSON of `body()`."""
        return hashlib.sha256(canonical_json(self.body())).digest()


class AnchorBackend(Protocol):
    """An anchoring target. `anchor` returns a JSON-ready receipt saying where the checkpoint now is."""

    name: str

    def anchor(self, checkpoint: Checkpoint, room: str) -> dict[str, Any]:
        """Anchor `checkpoint` of `room` (pseudonym); raise if the target is unreachable."""
        ...


def checkpoint_hash(checkpoint: Checkpoint) -> bytes:
    """SHA-256 of the checkpoint's note text: the exact bytes its signatures sign."""
    return hashlib.sha256(checkpoint.text().encode("utf-8")).digest()


def next_anchor(previous: Anchor | None, room: str, checkpoint: Checkpoint, time_ms: int) -> Anchor:
    """The record that follows `previous` (None: the first record) for `checkpoint`. Requires time_ms >= 0."""
    index, prev_hash = (0, GENESIS) if previous is None else (previous.index + 1, previous.hash)
    draft = Anchor(
        index, room, checkpoint.size, checkpoint.root, checkpoint_hash(checkpoint), time_ms, prev_hash, b""
    )
    return replace(draft, hash=draft.computed_hash())


def verify_anchor_chain(
    anchors: Iterable[Anchor], previous: Anchor | None = None, head: bytes | None = None
) -> None:
    """Raise AnchorChainError at the first broken record. Requires the records in index order.

    Without `previous` the records must start at index 0 (prev_hash GENESIS); with it, they must continue
    it. With `head`, the last record's hash must equal that externally witnessed head hash.
    """
    index, prev_hash = (0, GENESIS) if previous is None else (previous.index + 1, previous.hash)
    last: Anchor | None = None
    for anchor in anchors:
        if anchor.index != index:
            raise AnchorChainError(index, f"found record {anchor.index} where record {index} belongs")
        if anchor.prev_hash != prev_hash:
            raise AnchorChainError(index, f"prev_hash {anchor.prev_hash.hex()} is not {prev_hash.hex()}")
        if anchor.computed_hash() != anchor.hash:
            raise AnchorChainError(index, f"hash {anchor.hash.hex()} is not {anchor.computed_hash().hex()}")
        index, prev_hash, last = index + 1, anchor.hash, anchor
    if head is not None and (last is None or last.hash != head):
        raise AnchorChainError(index - 1, f"chain head is not the witnessed head {head.hex()}")


class LocalAnchorChain:
    """The embedded anchor chain in table `anchor_chain` of `conn`. Records cannot be updated or deleted.

    The constructor and `append` commit `conn`. Two writers cannot fork the chain: the second insert of
    the same index fails on the primary key.
    """

    name = "local"

    def __init__(self, conn: sqlite3.Connection, clock: Callable[[], int] | None = None):
        self._conn = conn
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        dialect = dialect_of(conn)
        table = ddl("CREATE TABLE IF NOT EXISTS anchor_chain (idx INTEGER PRIMARY KEY, room TEXT NOT NULL,"
                    " size INTEGER NOT NULL, root BLOB NOT NULL, checkpoint_hash BLOB NOT NULL,"
                    " time INTEGER NOT NULL, prev_hash BLOB NOT NULL, hash BLOB NOT NULL UNIQUE)", dialect)
        if dialect == POSTGRESQL:
            conn.create_schema([
                table,
                "CREATE OR REPLACE FUNCTION anchor_chain_append_only() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'anchor records are append-only'; END $$",
                "CREATE OR REPLACE TRIGGER anchor_chain_append_only BEFORE UPDATE OR DELETE ON anchor_chain"
                " FOR EACH ROW EXECUTE FUNCTION anchor_chain_append_only()",
            ])
            return
        with conn:
            conn.execute(table)
            for event in ("UPDATE", "DELETE"):
                conn.execute(
                    f"CREATE TRIGGER IF NOT EXISTS anchor_chain_no_{event.lower()}"
                    f" BEFORE {event} ON anchor_chain"
                    " BEGIN SELECT RAISE(ABORT, 'anchor records are append-only'); END"
                )

    def append(self, room: str, checkpoint: Checkpoint) -> Anchor:
        """Append and commit the record anchoring `checkpoint` of `room`. Commits `conn`'s transaction.

        Where several processes share the chain (PostgreSQL), one that loses the race for the next index
        tries again on the new head, a few times."""
        for attempt in range(APPEND_ATTEMPTS):
            try:
                with transaction(self._conn):
                    anchor = next_anchor(self.head(), room, checkpoint, self._clock())
                    self._conn.execute(
                        "INSERT INTO anchor_chain (idx, room, size, root, checkpoint_hash, time, prev_hash, hash)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        astuple(anchor),  # the field order is the column order
                    )
                return anchor
            except Exception as error:
                if attempt + 1 == APPEND_ATTEMPTS or not _is_taken(error):
                    raise
        raise AssertionError("unreachable")

    def anchor(self, checkpoint: Checkpoint, room: str) -> dict[str, Any]:
        """AnchorBackend: append a record and return its receipt."""
        anchor = self.append(room, checkpoint)
        return {"backend": self.name, "index": anchor.index, "hash": anchor.hash.hex(), "time": anchor.time}

    def head(self) -> Anchor | None:
        """The latest record, or None for an empty chain."""
        rows = self._select("ORDER BY idx DESC LIMIT 1", ())
        return rows[0] if rows else None

    def records(self, start: int = 0, stop: int | None = None) -> list[Anchor]:
        """Records start <= index < stop (stop None: to the head), in order. Requires start >= 0."""
        stop = 2**63 - 1 if stop is None else stop
        return self._select("WHERE idx >= ? AND idx < ? ORDER BY idx", (start, stop))

    def for_room(self, room: str) -> list[Anchor]:
        """The records of one room, in order."""
        return self._select("WHERE room = ? ORDER BY idx", (room,))

    def verify(self, head: bytes | None = None) -> None:
        """Verify the whole stored chain (and its head, if given). Raises AnchorChainError."""
        verify_anchor_chain(self.records(), head=head)

    def _select(self, clause: str, parameters: tuple[Any, ...]) -> list[Anchor]:
        """Anchors of `SELECT ... FROM anchor_chain <clause>`. Requires a trusted clause."""
        rows = self._conn.execute(
            "SELECT idx, room, size, root, checkpoint_hash, time, prev_hash, hash FROM anchor_chain "
            + clause,
            parameters,
        ).fetchall()
        return [
            Anchor(i, room, size, bytes(r), bytes(c), t, bytes(p), bytes(h))
            for i, room, size, r, c, t, p, h in rows
        ]


def _is_taken(error: Exception) -> bool:
    """Whether an insert failed because another writer took the index first (a unique key)."""
    return type(error).__name__ in ("UniqueViolation", "IntegrityError")


def _hash_from_hex(text: Any) -> bytes:
    """32 bytes from 64 lowercase hex digits."""
    if not isinstance(text, str) or len(text) != 64 or text != text.lower():
        raise ValueError(f"{text!r} is not 64 lowercase hex digits")
    return bytes.fromhex(text)

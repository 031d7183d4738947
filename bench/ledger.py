"""Ledger benchmark: appends/s, proof generation time, and verification of a 1,000,000-event log.

    .venv/bin/python bench/ledger.py [--full] [--events 1000000]

Prints one table; every row has a reference measured in the same run, and the ratio ours/reference.

- append: MerkleLog.append of precomputed leaf hashes into memory (reference: one SHA-256 per append); and
  the server's own path, EventLog.append of events on the room database exactly as the server opens it
  (sessions.sqlite_log.SqliteLogStore: WAL, synchronous=NORMAL, locking_mode=EXCLUSIVE, one row per event with its
  Merkle nodes), one commit per event as the hub acks them. The same with synchronous=FULL (an fsync per
  commit) is shown for comparison. The reference is the least a durable log can do: a bare INSERT of the same
  event bytes into an integer-keyed table, on a connection opened the same way, with the same commits.
- proofs: inclusion and consistency proofs at random sizes between n/2 and n (so past sizes, not just
  the head), from the room database at n = 1e5 and from memory at n = 1e6 (SQLite at 1e6 with --full). The
  reference is a full rebuild of the root from all n leaf hashes, which is what a server without stored nodes
  would pay.
- verify: the leaf hashes and root of 1M canonical event lines (what `theatrum verify` recomputes), against
  a raw SHA-256 of the same bytes; and the stricter check that each line is the canonical encoding of its
  event (decode_event), against plain json.loads, on 1e5 lines (all lines with --full).
- verify bundle: `verify_bundle` of a zipped export of those 1M events (sessions/ledger/verify.py: every
  leaf, the tree, each checkpoint's signature and root, consistency between successive checkpoints, the
  manifest), with a checkpoint every 100 events (the server's default policy: 10,000 signed notes) and every
  1,000. The reference is the least any verifier does: inflate events.jsonl and SHA-256 each line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sessions.events import Event
from sessions.ledger.bundle import BundleCheckpoint, BundleContents, write_bundle
from sessions.ledger.canonical import decode_event
from sessions.ledger.note import private_key_from_raw
from sessions.ledger.policy import cut_checkpoint, room_origin
from sessions.ledger.tree import MemoryNodeStore, MerkleLog
from sessions.ledger.verify import verify_bundle
from sessions.log import EventLog
from sessions.sqlite_log import SqliteLogStore

LINE = (
    '{"at":%d,"author":"p-%04x","data":{"id":"a%d","label":"Ventrikel \u2014 links","point":[%r,%r,%r]},'
    '"kind":"annotation.move","room":"r-8c21","seq":%d}'
)
QUERIES = 1000
REPEAT = range(2)  # append rows keep the best of these runs: other processes only ever slow a run down
# (synchronous, events, events per commit) of the room-database runs: NORMAL is production (no fsync at commit),
# FULL fsyncs every commit. One event per commit is a quiet room; the hub's group commit takes every op read in
# one turn of the loop (a busy server: tens), so 10 and 100 are shown too.
SQLITE_RUNS = [("NORMAL", 50_000, 1), ("NORMAL", 100_000, 10), ("NORMAL", 100_000, 100), ("FULL", 2_000, 1),
               ("FULL", 20_000, 10)]
PROOF_LOG = 100_000  # events in the room-database log that the SQLite proof rows read


def event_lines(n: int) -> list[bytes]:
    """n canonical event lines (checked on a sample by decode_event). Requires n > 0."""
    lines = [
        (LINE % (1732838400000 + 37 * i, i % 7, i % 50, 12.5 + i / 1024, -3.25, 100.0 / (i + 1), i + 1)).encode()
        for i in range(n)
    ]
    for line in lines[:: max(1, n // 97)]:
        decode_event(line)  # raises if the template ever stops producing canonical bytes
    return lines


def leaf_hashes(lines: list[bytes]) -> list[bytes]:
    """RFC 6962 leaf hashes."""
    sha256 = hashlib.sha256
    return [sha256(b"\x00" + line).digest() for line in lines]


def full_rebuild_root(leaves: list[bytes]) -> bytes:
    """The root recomputed level by level from every leaf hash (the no-stored-nodes cost). Requires leaves."""
    sha256, level = hashlib.sha256, leaves
    while len(level) > 1:
        parents = [sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        level = parents + level[len(level) - 1 :] if len(level) % 2 else parents
    return level[0]


def timed(work: Callable[..., object], *args: object) -> float:
    """Wall seconds of one call work(*args)."""
    start = time.perf_counter()
    work(*args)
    return time.perf_counter() - start


def append_all(log: MerkleLog, leaves: list[bytes]) -> None:
    """Append every leaf hash. Requires 32-byte hashes."""
    append = log.append
    for leaf in leaves:
        append(leaf)


def bare_inserts(conn: sqlite3.Connection, lines: list[bytes], per_commit: int = 1) -> None:
    """The reference durable write: each event's bytes as one integer-keyed row, one commit each."""
    conn.execute("CREATE TABLE bare (id INTEGER PRIMARY KEY, leaf BLOB NOT NULL)")
    insert, commit = conn.execute, conn.commit
    for i, line in enumerate(lines, start=1):
        insert("INSERT INTO bare (id, leaf) VALUES (?, ?)", (i, line))
        if i % per_commit == 0:
            commit()
    commit()


def log_appends(log: EventLog, events: list[Event], per_commit: int = 1) -> None:
    """The server's path: each event staged (row + Merkle nodes), committed `per_commit` at a time as the hub's
    group commit does for the ops of one turn of the loop. Requires a fresh log."""
    stage, commit = log.stage, log.commit
    for n, event in enumerate(events, start=1):
        stage(event)
        if n % per_commit == 0:
            commit()
    commit()


def proof_queries(n: int, seed: int) -> list[tuple[int, int, int]]:
    """(leaf index, size1, size) triples with n/2 <= size <= n. Requires n >= 2."""
    rng, queries = random.Random(seed), []
    for _ in range(QUERIES):
        size = rng.randint(n // 2, n)
        queries.append((rng.randrange(size), rng.randint(1, size), size))
    return queries


def proof_times(log: MerkleLog, queries: list[tuple[int, int, int]]) -> tuple[float, float]:
    """Mean seconds per inclusion proof and per consistency proof. Requires queries within the log."""
    inclusion = timed(lambda: [log.inclusion_proof(index, size) for index, _, size in queries])
    consistency = timed(lambda: [log.consistency_proof(size1, size) for _, size1, size in queries])
    return inclusion / len(queries), consistency / len(queries)


class Table:
    """Rows of (measurement, n, ours, reference, ref) in seconds per unit, printed with the ratio."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, float, str, float, bool]] = []

    def add(self, what: str, n: int, ours: float, reference: str, ref: float, rate: bool = False) -> None:
        """Add a row; times are seconds per item (rate: also show items/s). Requires ref > 0."""
        self.rows.append((what, n, ours, reference, ref, rate))
        print(f"  measured: {what}", file=sys.stderr, flush=True)

    def print(self) -> None:
        """Print the table to stdout."""
        header = ("measurement", "n", "ours", "reference", "ref", "ours/ref")
        lines = [header] + [
            (what, f"{n:,}", _fmt(ours, rate), reference, _fmt(ref, rate), f"{ours / ref:.3g}")
            for what, n, ours, reference, ref, rate in self.rows
        ]
        widths = [max(len(row[c]) for row in lines) for c in range(len(header))]
        for number, row in enumerate(lines):
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
            if number == 0:
                print("  ".join("-" * width for width in widths))


def _fmt(seconds: float, rate: bool) -> str:
    """'3.1 µs (322k/s)' or '12.3 ms' or '4.20 s'. Requires seconds > 0."""
    if seconds >= 1:
        text = f"{seconds:.2f} s"
    elif seconds >= 1e-3:
        text = f"{seconds * 1e3:.3g} ms"
    else:
        text = f"{seconds * 1e6:.3g} µs"
    return f"{text} ({1 / seconds / 1000:,.1f}k/s)" if rate else text


def bench_appends(table: Table, lines: list[bytes], leaves: list[bytes], folder: Path) -> MerkleLog:
    """Append rows, each the best of REPEAT runs; returns the Merkle log of a PROOF_LOG-event room database.

    Requires PROOF_LOG lines or more."""
    n_mem, sha256 = 200_000, hashlib.sha256
    ours = min(
        timed(lambda: append_all(MerkleLog(MemoryNodeStore()), leaves[:n_mem])) for _ in REPEAT
    )
    ref = min(timed(lambda: [sha256(leaf).digest() for leaf in leaves[:n_mem]]) for _ in REPEAT)
    table.add("append, memory store", n_mem, ours / n_mem, "1 SHA-256 per append", ref / n_mem, rate=True)
    events = [Event.from_leaf(line) for line in lines[:max(n for _, n, _ in SQLITE_RUNS)]]
    for synchronous, n, per_commit in SQLITE_RUNS:
        ours, ref = float("inf"), float("inf")
        for _ in REPEAT:
            store = SqliteLogStore(_fresh(folder, "rooms"), synchronous=synchronous)
            ours = min(ours, timed(log_appends, EventLog(store, "r-8c21"), events[:n], per_commit))
            store.close()
            bare = SqliteLogStore(_fresh(folder, "bare"), synchronous=synchronous)  # the same settings
            ref = min(ref, timed(bare_inserts, bare.conn, lines[:n], per_commit))
            bare.close()
        production = " (production)" if synchronous == "NORMAL" else ""
        what = f"append, room database, {synchronous}{production}, {per_commit} per commit"
        table.add(what, n, ours / n, "bare INSERT of the event, same commits", ref / n, rate=True)
    return room_database_log(folder, "proofs", lines, leaves, PROOF_LOG)


def room_database_log(folder: Path, name: str, lines: list[bytes], leaves: list[bytes], n: int) -> MerkleLog:
    """The Merkle log of a room database holding the first n events, built in transactions of 10,000 (only
    proofs are timed on it). Requires n <= len(lines) == len(leaves)."""
    store = SqliteLogStore(_fresh(folder, name), synchronous="NORMAL")
    merkle = MerkleLog(store.node_store("r-8c21"))
    for seq in range(1, n + 1):
        merkle.append(leaves[seq - 1])
        store.append("r-8c21", seq, lines[seq - 1])
        if seq % 10_000 == 0:
            store.commit()
    store.commit()
    return MerkleLog(store.node_store("r-8c21"))


def _fresh(folder: Path, name: str) -> Path:
    """The path of a database `name` in `folder`, with any earlier one (and its WAL) removed."""
    for suffix in ("", "-wal", "-shm"):
        (folder / f"{name}.db{suffix}").unlink(missing_ok=True)
    return folder / f"{name}.db"


def bench_proofs(table: Table, log: MerkleLog, leaves: list[bytes], store: str) -> None:
    """Inclusion and consistency proof rows for `log` (n = log.size). Requires log.size >= 2."""
    n = log.size
    rebuild = min(timed(lambda: full_rebuild_root(leaves[:n])) for _ in range(2))
    inclusion, consistency = proof_times(log, proof_queries(n, seed=n))
    table.add(f"inclusion proof, {store}", n, inclusion, "full rebuild of the root", rebuild)
    table.add(f"consistency proof, {store}", n, consistency, "full rebuild of the root", rebuild)


def bench_verify(table: Table, lines: list[bytes], full: bool) -> tuple[MerkleLog, list[bytes]]:
    """Verification rows over all `lines`; returns the memory log and the leaf hashes. Requires lines."""
    n, log, leaves = len(lines), MerkleLog(MemoryNodeStore()), []
    sha256 = hashlib.sha256
    ours = timed(lambda: (leaves.extend(leaf_hashes(lines)), append_all(log, leaves), log.root()))
    ref = timed(lambda: [sha256(line).digest() for line in lines])
    table.add("verify: leaf hashes + log + root", n, ours, "raw SHA-256 of the lines", ref)
    sample = lines if full else lines[:100_000]
    ours = timed(lambda: [decode_event(line) for line in sample])
    ref = timed(lambda: [json.loads(line) for line in sample])
    table.add(
        "verify: canonical form (decode_event)",
        len(sample),
        ours / len(sample),
        "json.loads",
        ref / len(sample),
    )
    return log, leaves


def bench_bundle(table: Table, lines: list[bytes], folder: Path, every: int) -> None:
    """The verify-bundle row for `lines` checkpointed every `every` events. Requires lines of room r-8c21."""
    key, origin, merkle, checkpoints = private_key_from_raw(bytes(32)), room_origin("r-8c21"), \
        MerkleLog(MemoryNodeStore()), []
    for size, line in enumerate(lines, start=1):
        merkle.append_data(line)
        if size % every == 0 or size == len(lines):
            checkpoints.append(BundleCheckpoint(cut_checkpoint(merkle, origin, key, 1732838400000 + size)[1]))
    path = write_bundle(folder / f"bundle-{every}.zip", BundleContents("r-8c21", origin, lines, checkpoints), key)
    ours = float("inf")
    for _ in REPEAT:
        start = time.perf_counter()
        report = verify_bundle(path)
        ours = min(ours, time.perf_counter() - start)
        if not report.ok:
            raise SystemExit(f"the benchmark bundle does not verify: {report.failure}")
    ref = min(timed(_inflate_and_hash, path) for _ in REPEAT)
    table.add(f"verify bundle, checkpoint every {every:,}", len(lines), ours, "inflate + SHA-256 per line", ref)
    path.unlink()


def _inflate_and_hash(path: Path) -> None:
    """Inflate events.jsonl from the zip and hash each line: the least a verifier does. Requires a bundle."""
    import zipfile

    sha256, rest = hashlib.sha256, b""
    with zipfile.ZipFile(path) as archive, archive.open("events.jsonl") as events:
        while chunk := events.read(1 << 23):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            [sha256(b"\x00" + line).digest() for line in lines]


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--full", action="store_true", help="SQLite proofs at 1e6 and the canonical check on all"
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the verification run")
    args = parser.parse_args()

    table = Table()
    lines = event_lines(args.events)
    memory_log, leaves = bench_verify(table, lines, args.full)
    with tempfile.TemporaryDirectory() as folder:
        for every in (100, 1000):
            bench_bundle(table, lines, Path(folder), every)
        sqlite_log = bench_appends(table, lines, leaves, Path(folder))
        bench_proofs(table, sqlite_log, leaves, "room database")
        bench_proofs(table, memory_log, leaves, "memory")
        if args.full:
            bench_proofs(table, room_database_log(Path(folder), "full", lines, leaves, len(lines)), leaves,
                         "room database")
    table.print()


if __name__ == "__main__":
    main()

"""Ledger benchmark: appends/s, proof generation time, and verification of a 1,000,000-event log.

    .venv/bin/python bench/ledger.py [--full] [--events 1000000]

Prints one table; every row has a reference measured in the same run, and the ratio ours/reference.

- append: MerkleLog.append of precomputed leaf hashes, into memory and into SQLite as production runs it
  (WAL; synchronous=NORMAL, and FULL which fsyncs every commit). SQLite is measured with one commit per
  append (an op-per-transaction server) and with a group commit every 100 appends. The references are the
  bare costs: one SHA-256 per append, and a bare one-row INSERT with the same commit pattern.
- proofs: inclusion and consistency proofs at random sizes between n/2 and n (so past sizes, not just
  the head), from SQLite at n = 1e5 and from memory at n = 1e6 (SQLite at 1e6 with --full). The reference
  is a full rebuild of the root from all n leaf hashes, which is what a server without stored nodes would pay.
- verify: the leaf hashes and root of 1M canonical event lines (what `theatrum verify` recomputes), against
  a raw SHA-256 of the same bytes; and the stricter check that each line is the canonical encoding of its
  event (decode_event), against plain json.loads, on 1e5 lines (all lines with --full).
- verify bundle: `verify_bundle` of a zipped export of those 1M events (sessions/bundle_verify.py: every
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

from sessions.bundle import BundleCheckpoint, BundleContents, write_bundle
from sessions.bundle_verify import verify_bundle
from sessions.canonical import decode_event
from sessions.checkpoint import private_key_from_raw
from sessions.checkpointer import cut_checkpoint, room_origin
from sessions.ledger import MemoryNodeStore, MerkleLog
from sessions.ledger_store import SqliteNodeStore, connect

LINE = (
    '{"at":%d,"author":"p-%04x","data":{"id":"a%d","label":"Ventrikel \u2014 links","point":[%r,%r,%r]},'
    '"kind":"annotation.move","room":"r-8c21","seq":%d}'
)
QUERIES = 1000
REPEAT = range(2)  # append rows keep the best of these runs: other processes only ever slow a run down
# (synchronous, appends, commit every): WAL with NORMAL (no fsync at commit) and FULL (fsync at every commit).
# The last run is the 1e5-leaf SQLite log that the proof rows use.
SQLITE_RUNS = [("FULL", 2_000, 1), ("FULL", 20_000, 100), ("NORMAL", 20_000, 1), ("NORMAL", 100_000, 100)]


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
    """RFC 6962 leaf hashes. Requires nothing."""
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
    """Wall seconds of one call work(*args). Requires nothing."""
    start = time.perf_counter()
    work(*args)
    return time.perf_counter() - start


def append_all(log: MerkleLog, leaves: list[bytes], commit: Callable[[], None] | None, every: int) -> None:
    """Append every leaf, calling `commit` every `every` appends and at the end. Requires every >= 1."""
    append = log.append
    for i, leaf in enumerate(leaves, start=1):
        append(leaf)
        if commit is not None and i % every == 0:
            commit()
    if commit is not None:
        commit()


def bare_inserts(conn: sqlite3.Connection, leaves: list[bytes], every: int) -> None:
    """The reference durable write: a 32-byte row per append, committed every `every`. Requires every >= 1."""
    conn.execute("CREATE TABLE bare (pos INTEGER PRIMARY KEY, hash BLOB NOT NULL)")
    insert = "INSERT INTO bare (pos, hash) VALUES (?, ?)"
    for i, leaf in enumerate(leaves, start=1):
        conn.execute(insert, (i, leaf))
        if i % every == 0:
            conn.commit()
    conn.commit()


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
        """Print the table to stdout. Requires nothing."""
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


def bench_appends(table: Table, leaves: list[bytes], folder: Path) -> MerkleLog:
    """Append rows, each the best of REPEAT runs; returns the last SQLite log. Requires 2e5 leaves or more."""
    n_mem, sha256 = 200_000, hashlib.sha256
    ours = min(
        timed(lambda: append_all(MerkleLog(MemoryNodeStore()), leaves[:n_mem], None, 1)) for _ in REPEAT
    )
    ref = min(timed(lambda: [sha256(leaf).digest() for leaf in leaves[:n_mem]]) for _ in REPEAT)
    table.add("append, memory store", n_mem, ours / n_mem, "1 SHA-256 per append", ref / n_mem, rate=True)
    for synchronous, n, every in SQLITE_RUNS:
        ours, ref = float("inf"), float("inf")
        for _ in REPEAT:
            conn = _sqlite(folder, "ledger", synchronous)
            log = MerkleLog(SqliteNodeStore(conn, "r-8c21"))
            ours = min(ours, timed(append_all, log, leaves[:n], conn.commit, every))
            bare = _sqlite(folder, "bare", synchronous)
            ref = min(ref, timed(bare_inserts, bare, leaves[:n], every))
            bare.close()
        commits = "commit per append" if every == 1 else f"group commit /{every}"
        what = f"append, SQLite {synchronous}, {commits}"
        table.add(what, n, ours / n, "bare 1-row INSERT, same commits", ref / n, rate=True)
    return log


def _sqlite(folder: Path, name: str, synchronous: str) -> sqlite3.Connection:
    """A fresh WAL database with the given synchronous setting. Requires a new name in `folder`."""
    (folder / f"{name}.db").unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        (folder / f"{name}.db{suffix}").unlink(missing_ok=True)
    conn = connect(folder / f"{name}.db")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


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
    ours = timed(lambda: (leaves.extend(leaf_hashes(lines)), append_all(log, leaves, None, 1), log.root()))
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
    """Run the benchmark and print the table. Requires nothing."""
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
        sqlite_log = bench_appends(table, leaves, Path(folder))
        bench_proofs(table, sqlite_log, leaves, "SQLite")
        bench_proofs(table, memory_log, leaves, "memory")
        if args.full:
            conn = connect(Path(folder) / "ledger-full.db")
            full_log = MerkleLog(SqliteNodeStore(conn, "full"))
            append_all(full_log, leaves, conn.commit, 10_000)
            bench_proofs(table, full_log, leaves, "SQLite")
    table.print()


if __name__ == "__main__":
    main()

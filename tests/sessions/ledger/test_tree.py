"""The Merkle log against the README roots of the shared vectors and a naive recursive RFC 6962 reference."""

from __future__ import annotations

import random
import re
import sqlite3
from functools import lru_cache

import pytest
from conftest import VECTORS, require_path

from sessions.ledger import merkle
from sessions.ledger.legacy_store import (
    MAX_LOGS,
    NodeStoreFullError,
    SqliteNodeStore,
    leaves_for_node_count,
)
from sessions.ledger.sqlite import connect
from sessions.ledger.tree import LedgerError, MemoryNodeStore, MerkleLog, MissingNodeError, SizeError

# --- the naive reference: RFC 6962 section 2.1, written as the RFC states it ---


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_root(leaves: tuple[bytes, ...]) -> bytes:
    if not leaves:
        return merkle.empty_root()
    if len(leaves) == 1:
        return merkle.leaf_hash(leaves[0])
    k = _split(len(leaves))
    return merkle.node_hash(ref_root(leaves[:k]), ref_root(leaves[k:]))


def ref_path(m: int, leaves: tuple[bytes, ...]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_root(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_root(leaves[:k])]


def ref_proof(m: int, leaves: tuple[bytes, ...], complete: bool = True) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [ref_root(leaves)]
    k = _split(n)
    if m <= k:
        return [*ref_proof(m, leaves[:k], complete), ref_root(leaves[k:])]
    return [*ref_proof(m - k, leaves[k:], False), ref_root(leaves[:k])]


# --- fixtures ---

DATA = tuple(i.to_bytes(4, "big") for i in range(1000))


@lru_cache(maxsize=1)
def memory_log() -> MerkleLog:
    log = MerkleLog(MemoryNodeStore())
    for data in DATA:
        log.append_data(data)
    return log


class CountingStore(MemoryNodeStore):
    """A MemoryNodeStore that counts reads, to show proofs cost O(log n) reads and appends none."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, level: int, index: int) -> bytes | None:
        self.reads += 1
        return super().get(level, index)


def readme_table() -> tuple[list[bytes], list[bytes]]:
    readme = require_path(VECTORS / "rfc6962" / "README.md", "../shared/testvectors/rfc6962").read_text()
    inputs = readme.split("leaf inputs (hex), in order:", 1)[1].split("\n\n", 1)[0]
    leaves = [bytes.fromhex(h.strip('"')) for h in re.findall(r"`(\"\"|[0-9a-f]+)`", inputs)]  # `""` is empty
    rows = re.findall(r"^\| (\d+) \| ([0-9a-f]{64}) \|$", readme, re.M)
    roots = [bytes.fromhex(h) for _, h in sorted(rows, key=lambda row: int(row[0]))]
    assert len(leaves) == 8 and len(roots) == 9
    return leaves, roots


# --- roots ---


def test_roots_match_the_readme_table_for_every_size() -> None:
    leaves, roots = readme_table()
    log = MerkleLog(MemoryNodeStore())
    assert log.root() == roots[0]
    for n, data in enumerate(leaves, start=1):
        log.append_data(data)
        assert log.root() == roots[n], n
    assert [log.root(n) for n in range(9)] == roots


def test_past_roots_match_the_reference() -> None:
    log = memory_log()
    for n in [0, 1, 2, 3, 7, 8, 9, 63, 64, 65, 511, 512, 513, 999, 1000]:
        assert log.root(n) == ref_root(DATA[:n]), n


# --- proofs against the reference, exhaustive for small trees and random for larger ones ---


@pytest.mark.parametrize("size", range(1, 34))
def test_every_proof_of_small_trees_matches_the_reference(size: int) -> None:
    log, leaves = memory_log(), DATA[:size]
    root = log.root(size)
    for index in range(size):
        proof = log.inclusion_proof(index, size)
        assert proof == ref_path(index, leaves)
        merkle.verify_inclusion(log.leaf(index), index, size, proof, root)
    for size1 in range(1, size + 1):
        proof = log.consistency_proof(size1, size)
        assert proof == ref_proof(size1, leaves)
        merkle.verify_consistency(size1, size, proof, log.root(size1), root)


def test_random_proofs_up_to_1000_match_the_reference() -> None:
    log, rng = memory_log(), random.Random(6962)
    for _ in range(150):
        size = rng.randint(1, len(DATA))
        index, size1 = rng.randrange(size), rng.randint(1, size)
        leaves = DATA[:size]
        inclusion, consistency = log.inclusion_proof(index, size), log.consistency_proof(size1, size)
        assert inclusion == ref_path(index, leaves)
        assert consistency == ref_proof(size1, leaves)
        merkle.verify_inclusion(merkle.leaf_hash(DATA[index]), index, size, inclusion, log.root(size))
        merkle.verify_consistency(size1, size, consistency, log.root(size1), log.root(size))


def test_a_proof_for_another_leaf_or_size_is_rejected() -> None:
    log = memory_log()
    proof = log.inclusion_proof(5, 100)
    with pytest.raises(merkle.RootMismatchError):
        merkle.verify_inclusion(log.leaf(6), 5, 100, proof, log.root(100))
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(log.leaf(5), 5, 101, proof, log.root(101))
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(10, 100, log.consistency_proof(10, 100), log.root(11), log.root(100))


# --- cost: O(log n) hashes per proof, O(log n) reads, no reads at all to append ---


def test_proof_lengths_and_store_reads_grow_with_log_n() -> None:
    store = CountingStore()
    log = MerkleLog(store)
    for data in DATA:
        log.append_data(data)
    assert store.reads == 0
    depth = (len(DATA) - 1).bit_length()  # 10
    rng = random.Random(9162)
    for _ in range(200):
        size = rng.randint(2, len(DATA))
        index, size1 = rng.randrange(size), rng.randint(1, size - 1)
        store.reads = 0
        assert len(log.inclusion_proof(index, size)) <= depth
        assert store.reads <= 2 * depth
        store.reads = 0
        assert len(log.consistency_proof(size1, size)) <= 2 * depth
        assert store.reads <= 3 * depth
        store.reads = 0
        log.root(size)
        assert store.reads <= depth


# --- bounds and a damaged store ---


def test_sizes_and_indices_beyond_the_log_are_refused() -> None:
    log = memory_log()
    with pytest.raises(SizeError):
        log.root(1001)
    with pytest.raises(SizeError):
        log.inclusion_proof(10, 10)
    with pytest.raises(SizeError):
        log.inclusion_proof(0, 1001)
    with pytest.raises(SizeError):
        log.consistency_proof(0, 10)
    with pytest.raises(SizeError):
        log.consistency_proof(11, 10)
    with pytest.raises(LedgerError):
        MerkleLog(MemoryNodeStore()).append(b"short")


def test_a_missing_node_is_reported_not_guessed() -> None:
    class Holey(MemoryNodeStore):
        def get(self, level: int, index: int) -> bytes | None:
            return None if (level, index) == (2, 0) else super().get(level, index)

    log = MerkleLog(Holey())
    for data in DATA[:8]:
        log.append_data(data)
    with pytest.raises(MissingNodeError) as caught:
        log.inclusion_proof(7, 8)
    assert (caught.value.level, caught.value.index) == (2, 0)


def test_memory_store_refuses_out_of_order_writes() -> None:
    store = MemoryNodeStore()
    store.put(0, 0, bytes(32))
    with pytest.raises(LedgerError):
        store.put(0, 2, bytes(32))


# --- the SQLite store ---


def test_sqlite_log_matches_memory_log_and_survives_reopen(tmp_path) -> None:
    path, reference = tmp_path / "ledger.db", memory_log()
    conn = connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    log = MerkleLog(SqliteNodeStore(conn, "room-a"))
    for data in DATA[:300]:
        log.append_data(data)
        conn.commit()
    for data in DATA[300:400]:
        log.append_data(data)  # never committed: must vanish
    conn.close()

    conn = connect(path)
    log = MerkleLog(SqliteNodeStore(conn, "room-a"))
    assert log.size == 300
    assert [log.root(n) for n in range(301)] == [reference.root(n) for n in range(301)]
    assert log.inclusion_proof(123, 300) == reference.inclusion_proof(123, 300)
    assert log.consistency_proof(77, 300) == reference.consistency_proof(77, 300)
    for data in DATA[300:]:
        log.append_data(data)
    conn.commit()
    assert log.root() == reference.root()
    conn.close()


def test_rooms_in_one_database_are_separate_logs(tmp_path) -> None:
    conn = sqlite3.connect(tmp_path / "ledger.db")
    a, b = MerkleLog(SqliteNodeStore(conn, "a")), MerkleLog(SqliteNodeStore(conn, "b"))
    for data in DATA[:10]:
        a.append_data(data)
    b.append_data(DATA[0])
    conn.commit()
    assert (a.size, b.size) == (10, 1)
    assert a.root() == memory_log().root(10) and b.root() == memory_log().root(1)
    assert MerkleLog(SqliteNodeStore(conn, "c")).root() == merkle.empty_root()


def test_a_database_refuses_more_logs_than_its_keys_hold(tmp_path) -> None:
    conn = sqlite3.connect(tmp_path / "ledger.db")
    SqliteNodeStore(conn, "first")
    conn.execute("INSERT INTO merkle_logs (id, name) VALUES (?, 'one too many')", (MAX_LOGS,))
    with pytest.raises(NodeStoreFullError):
        SqliteNodeStore(conn, "one too many")


def test_node_counts_of_append_only_trees() -> None:
    assert [leaves_for_node_count(2 * n - n.bit_count()) for n in range(200)] == list(range(200))
    with pytest.raises(ValueError):
        leaves_for_node_count(2)  # one leaf has 1 node, two leaves have 3


def test_a_failing_store_leaves_the_log_unchanged() -> None:
    class Failing(MemoryNodeStore):
        fail = False

        def put(self, level: int, index: int, hash_: bytes) -> None:
            if self.fail and level == 2:
                raise OSError("disk full")
            super().put(level, index, hash_)

    store = Failing()
    log = MerkleLog(store)
    for data in DATA[:3]:
        log.append_data(data)
    store.fail = True
    with pytest.raises(OSError):
        log.append_data(DATA[3])  # completes nodes (1, 1) and (2, 0): the second write fails
    assert (log.size, log.root()) == (3, memory_log().root(3))

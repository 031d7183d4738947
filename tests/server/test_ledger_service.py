"""The ledger service (server/services/ledger.py): its key, when it cuts checkpoints, and anchoring that is retried
with backoff, survives restarts, and never blocks a room."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from rooms import Clock, new_room, point, sqlite_store

from server.services.ledger import LedgerConfig, LedgerService, Retry
from server.storage.checkpoints import ANCHORED, FAILED, PENDING, CheckpointStore
from server.storage.files import atomic_write
from server.storage.keys import SIGNING_KEY_FILE as KEY_FILE
from server.storage.keys import load_or_create_signing_key
from sessions.events import Event
from sessions.ledger.anchors import LocalAnchorChain, verify_anchor_chain
from sessions.ledger.bundle import bundle_bytes
from sessions.ledger.note import parse_and_verify, public_key_bytes
from sessions.ledger.policy import CheckpointPolicy
from sessions.ledger.sqlite import connect
from sessions.ledger.verify import verify_bundle
from sessions.log import EventLog, LogCorruptError
from sessions.roles import Role

T0 = 1_800_000_000_000


class Now:
    """A settable clock in ms."""

    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


class Flaky:
    """An anchoring target that fails `failures` times, then succeeds."""

    name = "local"

    def __init__(self, failures: int):
        self.failures = failures
        self.calls: list[int] = []

    def anchor(self, checkpoint, room):
        self.calls.append(checkpoint.size)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("node down")
        return {"backend": "local", "index": len(self.calls), "hash": "00" * 32, "time": 1}


class Hanging:
    """A blocking target (like an EVM node that does not answer) until `release` is set."""

    name = "evm"
    blocking = True

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def anchor(self, checkpoint, room):
        self.started.set()
        if not self.release.wait(30):
            raise TimeoutError("never released")
        return {"backend": "evm", "chain_id": 1, "tx_hash": "0x" + "11" * 32, "block_number": checkpoint.size,
                "block_hash": "0x" + "22" * 32, "from": "0x" + "33" * 20}


@pytest.fixture
def room(tmp_path: Path):
    return new_room({"ines": Role.INSTRUCTOR, "sam": Role.SURGEON}, store=sqlite_store(tmp_path), clock=Clock(T0))


RETRY = Retry(base=1.0, cap=8.0, max_attempts=4)


def service_for(tmp_path: Path, room, backends=("local",), *, every=5, seconds=10.0, clock=None,
                retry=RETRY) -> LedgerService:
    conn = connect(tmp_path / "ledger.sqlite")
    chain = LocalAnchorChain(conn, clock=clock)
    targets = [chain if b == "local" else b for b in backends]
    return LedgerService(CheckpointStore(conn), load_or_create_signing_key(tmp_path / KEY_FILE), targets,
                         policy=CheckpointPolicy(every, seconds), chain=chain, retry=retry, clock=clock or Now())


def ops(room, n: int, service: LedgerService | None = None) -> None:
    for i in range(n):
        room.apply(point(float(i)), "ines", T0 + room.seq)
        if service is not None:
            service.appended(room.log)


# ---- the key ------------------------------------------------------------------------------------------


def test_the_key_is_created_once_0600_and_reused(tmp_path: Path):
    path = tmp_path / "data" / KEY_FILE
    key = load_or_create_signing_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert public_key_bytes(load_or_create_signing_key(path)) == public_key_bytes(key)
    os.chmod(path, 0o644)
    load_or_create_signing_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert not atomic_write(path, b"another key", exclusive=True)  # a racing second start never replaces the key
    assert public_key_bytes(load_or_create_signing_key(path)) == public_key_bytes(key)
    assert [p.name for p in path.parent.iterdir()] == [KEY_FILE]  # no temporary file left behind


# ---- when checkpoints are cut ---------------------------------------------------------------------------


def test_a_checkpoint_every_n_events_signed_for_the_rooms_origin(tmp_path: Path, room):
    service = service_for(tmp_path, room)
    service.watch(room.log)
    ops(room, 11, service)  # after room.open and two joins: 14 events
    stored = service.store.checkpoints(room.id)
    assert [s.size for s in stored] == [5, 10]
    for s in stored:
        checkpoint = parse_and_verify(s.note, service.verifier(room.id), f"theatrum.local/rooms/{room.id}")
        assert checkpoint == s.checkpoint and checkpoint.root == room.log.root(s.size)


def test_the_clock_cuts_uncovered_events_after_t_seconds_and_close_cuts_at_once(tmp_path: Path, room):
    now = Now()
    service = service_for(tmp_path, room, every=100, seconds=10, clock=now)
    service.watch(room.log)  # room.open and two joins, not covered: due T seconds after they were first seen
    assert service.tick() == []
    now.ms += 10_000
    assert [c.size for c in service.tick()] == [3]
    now.ms += 9_000
    assert service.tick() == []  # nothing new
    ops(room, 2, service)
    assert service.tick() == []  # new events, but the last checkpoint is only 9 s old
    now.ms += 1_000
    assert [c.size for c in service.tick()] == [5]
    now.ms += 60_000
    assert service.tick() == []  # nothing new since
    room.close(T0 + 99)
    assert service.closed(room.log).size == 6
    assert service.closed(room.log) is None


def test_ensure_checkpoint_covers_the_head(tmp_path: Path, room):
    service = service_for(tmp_path, room, every=100)
    ops(room, 4, service)
    first = service.ensure_checkpoint(room.log)
    assert first.size == room.seq == 7
    assert service.ensure_checkpoint(room.log) == first


def test_a_restarted_service_resumes_what_its_checkpoints_cover(tmp_path: Path, room):
    service = service_for(tmp_path, room)
    ops(room, 6, service)
    again = service_for(tmp_path, room)
    ops(room, 1, again)  # 10 events: the reopened service counts from its stored checkpoint at 5
    assert [s.size for s in again.store.checkpoints(room.id)] == [5, 10]


def test_a_log_cut_short_below_its_checkpoint_is_refused_at_start(tmp_path: Path, room):
    service = service_for(tmp_path, room)
    ops(room, 6, service)  # 9 events, a checkpoint at 5
    store = room.log.store
    store.conn.execute("DELETE FROM events WHERE id > ?", (store.row_id(room.id, 4),))  # rows and nodes together
    store.conn.commit()
    with pytest.raises(LogCorruptError, match=f"room {room.id}: the log holds 4 events"):
        service_for(tmp_path, room).watch(EventLog(store, room.id))


def test_a_log_rewritten_consistently_is_refused_at_start(tmp_path: Path, room):
    service = service_for(tmp_path, room)
    ops(room, 6, service)
    store = room.log.store
    leaves = [leaf for _, leaf in store.leaves(room.id)]
    leaves[2] = leaves[2].replace(b"Name of sam", b"Name of Sam")  # a join, renamed
    store.conn.execute("DELETE FROM events")
    store.conn.commit()
    rewritten = EventLog(store, room.id)
    for leaf in leaves:
        rewritten.append(Event.from_leaf(leaf))  # rows and Merkle nodes that agree with each other
    assert list(rewritten.verified_events())  # the log alone cannot tell
    with pytest.raises(LogCorruptError, match="do not hash to the root of the checkpoint"):
        service_for(tmp_path, room).watch(rewritten)


# ---- anchoring ------------------------------------------------------------------------------------------


async def test_local_anchoring_makes_a_verifiable_chain(tmp_path: Path, room):
    service = service_for(tmp_path, room)
    ops(room, 11, service)
    assert await service.anchor_due() == 2
    rows = service.store.anchorings(room.id)
    assert [(r.size, r.status, r.attempts) for r in rows] == [(5, ANCHORED, 1), (10, ANCHORED, 1)]
    assert service.chain is not None
    verify_anchor_chain(service.chain.records())
    assert [r.receipt["index"] for r in rows] == [a.index for a in service.chain.for_room(room.id)]


async def test_failures_are_retried_with_exponential_backoff_then_fail_then_requeue(tmp_path: Path, room):
    now, target = Now(), Flaky(failures=5)
    service = service_for(tmp_path, room, (target,), clock=now)
    ops(room, 2, service)
    assert await service.anchor_due() == 1
    delays = []
    for attempts in range(1, 5):
        (row,) = service.store.anchorings(room.id)
        assert (row.attempts, row.last_error) == (attempts, "ConnectionError: node down")
        delays.append(row.next_attempt - now.ms)
        assert await service.anchor_due() == 0  # not due before its backoff has passed
        now.ms = row.next_attempt
        await service.anchor_due()
    assert delays == [1000, 2000, 4000, 8000]
    (row,) = service.store.anchorings(room.id)
    assert (row.status, row.attempts) == (FAILED, 4)  # max_attempts: given up, visible in the status
    assert service.status(room.id)["checkpoints"][0]["anchorings"][0]["status"] == FAILED
    assert service.retry_failed() == 1  # a new round of attempts
    await service.anchor_due()  # the fifth failure
    (row,) = service.store.anchorings(room.id)
    assert (row.status, row.attempts) == (PENDING, 1)
    now.ms += 1000
    await service.anchor_due()
    (row,) = service.store.anchorings(room.id)
    assert (row.status, row.attempts, row.last_error) == (ANCHORED, 2, None)
    assert target.calls == [5] * 6


async def test_a_hanging_anchor_never_blocks_the_room(tmp_path: Path, room):
    hanging = Hanging()
    service = service_for(tmp_path, room, ("local", hanging))
    await service.start(tick_seconds=0.01)
    try:
        ops(room, 2, service)  # checkpoint at 5: queued for local and evm
        assert await asyncio.to_thread(hanging.started.wait, 10)
        ops(room, 20, service)  # the EVM call hangs in its thread; the room goes on, checkpoints are cut
        for _ in range(200):
            await asyncio.sleep(0.01)
            rows = service.store.anchorings(room.id)
            if all(r.status == ANCHORED for r in rows if r.backend == "local"):
                break
        sizes = [s.size for s in service.store.checkpoints(room.id)]
        assert sizes == [5, 10, 15, 20, 25]
        status = {(r.size, r.backend): r.status for r in service.store.anchorings(room.id)}
        assert {status[(s, "local")] for s in sizes} == {ANCHORED}
        assert {status[(s, "evm")] for s in sizes} == {PENDING}
        hanging.release.set()
        for _ in range(500):
            await asyncio.sleep(0.01)
            if all(r.status == ANCHORED for r in service.store.anchorings(room.id)):
                break
        assert {r.status for r in service.store.anchorings(room.id)} == {ANCHORED}
    finally:
        hanging.release.set()
        await service.stop()


async def test_queued_anchorings_survive_a_restart(tmp_path: Path, room):
    service = service_for(tmp_path, room, (Flaky(failures=1),))
    ops(room, 2, service)
    await service.anchor_due()
    assert service.store.anchorings(room.id)[0].status == PENDING
    target = Flaky(failures=0)
    again = service_for(tmp_path, room, (target,), clock=lambda: T0 + 10**9)
    assert await again.anchor_due() == 1 and target.calls == [5]
    assert again.store.anchorings(room.id)[0].status == ANCHORED


# ---- the export -----------------------------------------------------------------------------------------


async def test_the_export_of_a_served_room_verifies(tmp_path: Path, room):
    service = service_for(tmp_path, room, every=4)
    ops(room, 9, service)  # 12 events: checkpoints at 4, 8, 12
    await service.anchor_due()
    assert service.chain is not None
    service.chain.append(room.id, service.store.latest(room.id).checkpoint)  # a crash before its status update
    ops(room, 1)
    head = service.ensure_checkpoint(room.log)  # the export cuts the head: 13, not anchored yet
    leaves = list(room.log.leaves(0, head.size))
    report = verify_bundle(bundle_bytes(service.bundle_contents(room.id, head.size, leaves), service.key))
    assert report.ok, report.failure
    assert (report.events, report.checkpoints, report.local_anchors, report.unanchored) == (13, 4, 3, (4,))


def test_config_from_settings_fields_with_defaults():
    class Settings:
        ledger_every_events = 7
        ledger_anchors = "local, evm"
        evm_rpc = "http://127.0.0.1:8545"

    config = LedgerConfig.from_settings(Settings())
    assert (config.every_events, config.every_seconds, config.anchors, config.evm_rpc, config.evm_key) == (
        7, 10.0, ("local", "evm"), "http://127.0.0.1:8545", "")
    assert LedgerConfig.from_settings(object()) == LedgerConfig()
    with pytest.raises(ValueError, match="THEATRUM_EVM_RPC"):
        LedgerService.open(Path("/nonexistent-unused"), LedgerConfig(anchors=("evm",)))

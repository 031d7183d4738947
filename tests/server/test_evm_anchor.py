"""Anchoring on a real EVM node: anvil (npm @foundry-rs/anvil, in web-client's devDependencies) on a free
loopback port. A checkpoint's anchor transaction is read back and checked; a served room anchored on chain
verifies with `theatrum verify --rpc`; and with the node down, checkpoints queue and are retried until it is up.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from bundles import resign
from conftest import REPO, free_port, require_tool
from rooms import Clock, new_room, point, sqlite_store
from web3 import Web3

from server.cli.main import main
from server.services.evm import EvmAnchor, EvmError, OnChainCheck, anchor_data, parse_anchor_data
from server.services.ledger import LedgerService, Retry
from server.storage.checkpoints import ANCHORED, PENDING, CheckpointStore
from server.storage.keys import SIGNING_KEY_FILE as KEY_FILE
from server.storage.keys import load_or_create_signing_key
from sessions.ledger.anchors import LocalAnchorChain
from sessions.ledger.bundle import CHECKPOINTS, write_bundle
from sessions.ledger.note import Checkpoint
from sessions.ledger.policy import CheckpointPolicy
from sessions.ledger.sqlite import connect
from sessions.roles import Role

ANVIL = REPO / "web-client" / "node_modules" / ".bin" / "anvil"


@dataclass
class Node:
    """A running anvil: its URL, its funded dev keys, its process."""

    url: str
    keys: list[str]
    process: subprocess.Popen

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_anvil(port: int, log: Path) -> Node:
    """anvil on 127.0.0.1:`port`, its output in `log` (a pipe would fill up and stall it)."""
    with open(log, "wb") as out:
        process = subprocess.Popen([str(require_tool(ANVIL, "anvil (run npm install in web-client)")),
                                    "--host", "127.0.0.1", "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "Listening on" in text:
            keys = re.findall(r"\(\d+\) (0x[0-9a-f]{64})", text)
            return Node(f"http://127.0.0.1:{port}", keys, process)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"anvil did not start: {log.read_text(errors='replace')[-2000:]}")


@pytest.fixture(scope="module")
def anvil(tmp_path_factory) -> Iterator[Node]:
    node = start_anvil(free_port(), tmp_path_factory.mktemp("anvil") / "anvil.log")
    yield node
    node.stop()


def test_anchor_data_is_tag_version_root_size_room():
    root = bytes(range(32))
    data = anchor_data(root, 1234, "rm0f3a")
    assert data == b"THTR\x01" + root + (1234).to_bytes(8, "big") + b"rm0f3a"
    assert parse_anchor_data(data) == (root, 1234, "rm0f3a")
    for bad in (data[:44], b"XXXX" + data[4:], data[:4] + b"\x02" + data[5:]):
        with pytest.raises(ValueError):
            parse_anchor_data(bad)


def test_an_anchor_transaction_carries_the_checkpoint_and_is_checked_on_chain(anvil: Node):
    checkpoint = Checkpoint("theatrum.local/rooms/rm01", 42, bytes(range(32)), 1_800_000_000_000)
    backend = EvmAnchor(anvil.url, anvil.keys[0])
    receipt = backend.anchor(checkpoint, "rm01")
    assert receipt["backend"] == "evm" and receipt["chain_id"] == 31337 and receipt["from"] == backend.address
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    transaction = w3.eth.get_transaction(receipt["tx_hash"])
    assert bytes(transaction["input"]) == anchor_data(checkpoint.root, 42, "rm01")
    assert transaction["from"] == transaction["to"] == backend.address and transaction["value"] == 0
    assert transaction["blockNumber"] == receipt["block_number"]
    assert transaction["blockHash"].to_0x_hex() == receipt["block_hash"]
    check = OnChainCheck(anvil.url)
    assert check(checkpoint, "rm01", receipt) is None
    other = Checkpoint(checkpoint.origin, 43, checkpoint.root, checkpoint.time)
    assert "data is" in check(other, "rm01", receipt)
    assert "data is" in check(checkpoint, "rm02", receipt)
    assert check(checkpoint, "rm01", {**receipt, "tx_hash": "0x" + "00" * 32}) == "no such transaction on chain"
    assert "chain 1" in check(checkpoint, "rm01", {**receipt, "chain_id": 1})
    assert "block" in check(checkpoint, "rm01", {**receipt, "block_number": receipt["block_number"] + 1})


def test_a_bad_private_key_is_refused_plainly(anvil: Node):
    with pytest.raises(EvmError, match="THEATRUM_EVM_KEY"):
        EvmAnchor(anvil.url, "0x1234")


def _service(tmp_path: Path, room, evm: EvmAnchor, retry: Retry | None = None) -> LedgerService:
    conn = connect(tmp_path / "ledger.sqlite")
    chain = LocalAnchorChain(conn)
    return LedgerService(CheckpointStore(conn), load_or_create_signing_key(tmp_path / KEY_FILE), [chain, evm],
                         policy=CheckpointPolicy(every_events=6), chain=chain, retry=retry)


def _export(service: LedgerService, room, target: Path) -> Path:
    head = service.ensure_checkpoint(room.log)
    leaves = list(room.log.leaves(0, head.size))
    return write_bundle(target, service.bundle_contents(room.id, head.size, leaves), service.key)


async def test_a_served_room_anchored_on_chain_verifies_with_rpc(anvil: Node, tmp_path: Path, capsys):
    clock = Clock()
    room = new_room({"ines": Role.INSTRUCTOR}, store=sqlite_store(tmp_path), clock=clock)
    service = _service(tmp_path, room, EvmAnchor(anvil.url, anvil.keys[1], poll=0.05))
    for i in range(23):  # with room.open and the join: 25 events, checkpoints at 6, 12, 18, 24
        room.apply(point(float(i)), "ines", clock())
        service.appended(room.log)
    assert await service.anchor_due() == 8  # 4 checkpoints x (local, evm)
    assert {r.status for r in service.store.anchorings(room.id)} == {ANCHORED}

    bundle = _export(service, room, tmp_path / "room")
    assert main(["verify", str(bundle), "--rpc", anvil.url]) == 0
    out = capsys.readouterr().out
    assert "4 EVM (4 checked on chain)" in out and "not anchored yet: 5" in out

    # Swap the EVM receipts of checkpoints 1 and 2 (and re-sign the manifest, as the key holder could):
    # offline everything still parses; on chain each transaction carries the other checkpoint.
    document = json.loads((bundle / CHECKPOINTS).read_text())
    first, second = (next(a for a in c["anchorings"] if a["backend"] == "evm") for c in document["checkpoints"][:2])
    first["receipt"], second["receipt"] = second["receipt"], first["receipt"]
    (bundle / CHECKPOINTS).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    resign(bundle, service.key)
    assert main(["verify", str(bundle)]) == 0
    capsys.readouterr()
    assert main(["verify", str(bundle), "--rpc", anvil.url]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"FAILED {bundle}: checkpoint 1: checkpoint 1: EVM anchor") and "data is" in out


async def test_node_down_checkpoints_queue_and_retry_and_the_room_goes_on(anvil: Node, tmp_path: Path):
    port = free_port()  # nothing listens here yet
    clock = Clock()
    room = new_room({"ines": Role.INSTRUCTOR}, store=sqlite_store(tmp_path), clock=clock)
    evm = EvmAnchor(f"http://127.0.0.1:{port}", anvil.keys[0], poll=0.05, request_timeout=2)
    service = _service(tmp_path, room, evm, Retry(base=0.05, cap=0.2, max_attempts=10_000))
    await service.start(tick_seconds=0.05)
    node = None
    try:
        for i in range(14):
            room.apply(point(float(i)), "ines", clock())  # the room is never held up by its ledger
            service.appended(room.log)
            await asyncio.sleep(0.02)
        rows = await _until(service, room.id, lambda rows: all(r.attempts >= 2 for r in rows if r.backend == "evm"))
        evm_rows = [r for r in rows if r.backend == "evm"]
        assert [r.size for r in evm_rows] == [6, 12] and {r.status for r in evm_rows} == {PENDING}
        assert all("EvmUnavailable" in r.last_error for r in evm_rows)
        assert {r.status for r in rows if r.backend == "local"} == {ANCHORED}
        status = service.status(room.id)["checkpoints"][0]["anchorings"]
        assert {a["backend"]: a["status"] for a in status} == {"local": ANCHORED, "evm": PENDING}

        node = start_anvil(port, tmp_path / "anvil.log")  # the node comes back
        rows = await _until(service, room.id, lambda rows: all(r.status == ANCHORED for r in rows), seconds=60)
        assert all(r.receipt["chain_id"] == 31337 for r in rows if r.backend == "evm")
        bundle = _export(service, room, tmp_path / "room.zip")
        assert main(["verify", str(bundle), "--rpc", node.url]) == 0
    finally:
        await service.stop()
        if node is not None:
            node.stop()


async def _until(service: LedgerService, room: str, done, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rows = service.store.anchorings(room)
        if rows and done(rows):
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached in {seconds} s: {service.store.anchorings(room)}")

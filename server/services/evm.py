"""Anchoring checkpoints on an Ethereum-compatible chain (web3.py), and checking such anchors.

`EvmAnchor` is an `AnchorBackend`: it sends a 0-value transaction from the configured key to its own
address, whose data is `anchor_data(root, size, room)` (docs/ledger.md section 4.2), waits for the receipt
and returns {backend, chain_id, tx_hash, block_number, block_hash, from}. Any JSON-RPC endpoint works: a
public chain, an L2, a permissioned chain (Hyperledger Besu), or anvil in the tests. Its calls block, so the
ledger service runs them in a thread (`blocking = True`).

`OnChainCheck` is the other side, for `theatrum verify --rpc URL`: it reads each anchor transaction back by
hash and compares its data, sender, block and status with the receipt and the checkpoint.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any

from sessions.ledger.note import Checkpoint

_RECURSION_LIMIT = sys.getrecursionlimit()
from eth_account import Account  # noqa: E402
from web3 import Web3  # noqa: E402
from web3.exceptions import TransactionNotFound, Web3Exception  # noqa: E402

# py_ecc (imported by web3) raises the interpreter's recursion limit to 100,000 for all of the process; with it,
# a parser recursing into hostile input overflows the C stack instead of raising RecursionError. Put it back.
sys.setrecursionlimit(_RECURSION_LIMIT)

TAG = b"THTR"
VERSION = 1
_HEADER = len(TAG) + 1 + 32 + 8  # tag, version, root, size
MAX_ROOM_BYTES = 255
_TX_HASH = re.compile(r"0x[0-9a-f]{64}")


class EvmError(Exception):
    """Anchoring on chain failed (the node refused, or the transaction did not succeed)."""


class EvmUnavailable(EvmError):
    """The JSON-RPC node could not be reached."""


def anchor_data(root: bytes, size: int, room: str) -> bytes:
    """The transaction data of an anchor: "THTR" 0x01 ‖ root ‖ size (8 bytes, big-endian) ‖ room (UTF-8).

    Requires a 32-byte root, 0 <= size < 2**64, and a room pseudonym of 1 to 255 UTF-8 bytes.
    """
    name = room.encode("utf-8")
    if len(root) != 32 or not 0 <= size < 1 << 64 or not 0 < len(name) <= MAX_ROOM_BYTES:
        raise ValueError("anchor data needs a 32-byte root, a 64-bit size and a room of 1 to 255 bytes")
    return TAG + bytes([VERSION]) + root + size.to_bytes(8, "big") + name


def parse_anchor_data(data: bytes) -> tuple[bytes, int, str]:
    """(root, size, room) of anchor transaction data. Raises ValueError if it is not version-1 anchor data."""
    if len(data) <= _HEADER or data[:4] != TAG or data[4] != VERSION or len(data) > _HEADER + MAX_ROOM_BYTES:
        raise ValueError("not Theatrum anchor data (THTR, version 1)")
    return data[5:37], int.from_bytes(data[37:45], "big"), data[45:].decode("utf-8")


def _connect(rpc_url: str, request_timeout: float) -> Web3:
    """A Web3 over HTTP JSON-RPC. Requires an http(s) URL."""
    if not rpc_url.startswith(("http://", "https://")):
        raise EvmError(f"the EVM RPC URL must be http(s)://..., got {rpc_url!r}")
    return Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": request_timeout}))


class EvmAnchor:
    """AnchorBackend "evm": one self-addressed 0-value transaction per checkpoint, from `private_key`.

    Calls block (HTTP, then polling for the receipt up to `timeout` s); run them off the event loop.
    One EvmAnchor sends one transaction at a time (nonces come from the node's pending count).
    """

    name = "evm"
    blocking = True

    def __init__(self, rpc_url: str, private_key: str, *, timeout: float = 120.0, poll: float = 0.5,
                 request_timeout: float = 10.0):
        try:
            self.account = Account.from_key(private_key)
        except (ValueError, TypeError) as error:
            raise EvmError("THEATRUM_EVM_KEY is not a valid private key (0x + 64 hex digits)") from error
        self.rpc_url = rpc_url
        self.timeout = timeout
        self.poll = poll
        self._w3 = _connect(rpc_url, request_timeout)

    @property
    def address(self) -> str:
        """The sender's (checksummed) address: fund it on a real chain."""
        return self.account.address

    def anchor(self, checkpoint: Checkpoint, room: str) -> dict[str, Any]:
        """Send and confirm the anchor transaction; return its receipt. Raises EvmError / EvmUnavailable."""
        data = anchor_data(checkpoint.root, checkpoint.size, room)
        try:
            return self._send(data)
        except EvmError:
            raise
        except (OSError, Web3Exception, ValueError, TimeoutError) as error:
            if _unreachable(error):
                raise EvmUnavailable(f"{self.rpc_url}: {type(error).__name__}: {error}") from error
            raise EvmError(f"{type(error).__name__}: {error}") from error

    def _send(self, data: bytes) -> dict[str, Any]:
        """Build, sign, send and await one transaction. Requires a reachable node."""
        eth, sender = self._w3.eth, self.account.address
        chain_id = eth.chain_id
        transaction: dict[str, Any] = {
            "from": sender, "to": sender, "value": 0, "data": data, "chainId": chain_id,
            "nonce": eth.get_transaction_count(sender, "pending"), "gasPrice": eth.gas_price,
        }
        # Always the node's estimate: the calldata surcharge makes a hand-computed gas fall short, and anvil
        # accepts such a transaction but never mines it.
        transaction["gas"] = eth.estimate_gas(transaction)
        signed = self.account.sign_transaction(transaction)
        tx_hash = eth.send_raw_transaction(signed.raw_transaction)
        receipt = eth.wait_for_transaction_receipt(tx_hash, timeout=self.timeout, poll_latency=self.poll)
        if receipt["status"] != 1:
            raise EvmError(f"transaction {tx_hash.to_0x_hex()} failed on chain (status {receipt['status']})")
        return {"backend": self.name, "chain_id": chain_id, "tx_hash": tx_hash.to_0x_hex(),
                "block_number": receipt["blockNumber"], "block_hash": receipt["blockHash"].to_0x_hex(),
                "from": sender}


class OnChainCheck:
    """`rpc_check` for sessions.ledger.verify.verify_bundle: does each EVM anchor exist on chain, as receipted?

    Calling it returns None when the transaction matches, else the problem in words; it raises
    EvmUnavailable when the node cannot be reached (then nothing can be said either way).
    """

    def __init__(self, rpc_url: str, *, request_timeout: float = 10.0):
        self.rpc_url = rpc_url
        self._w3 = _connect(rpc_url, request_timeout)
        self._chain_id: int | None = None

    def __call__(self, checkpoint: Checkpoint, room: str, receipt: Mapping[str, Any]) -> str | None:
        try:
            return self._check(checkpoint, room, receipt)
        except (OSError, Web3Exception, ValueError, TimeoutError) as error:
            if _unreachable(error):
                raise EvmUnavailable(f"{self.rpc_url}: cannot reach the node: {error}") from error
            return f"the node refused the lookup: {type(error).__name__}: {error}"

    def _check(self, checkpoint: Checkpoint, room: str, receipt: Mapping[str, Any]) -> str | None:
        """The problem with one anchor, or None. Requires a well-formed EVM receipt."""
        eth = self._w3.eth
        if self._chain_id is None:
            self._chain_id = eth.chain_id
        if receipt["chain_id"] != self._chain_id:
            return f"it is on chain {receipt['chain_id']}, the node serves chain {self._chain_id}"
        tx_hash = receipt["tx_hash"]
        if not isinstance(tx_hash, str) or not _TX_HASH.fullmatch(tx_hash):
            return "malformed transaction hash"
        try:
            transaction = eth.get_transaction(tx_hash)
        except TransactionNotFound:
            return "no such transaction on chain"
        want = anchor_data(checkpoint.root, checkpoint.size, room)
        if bytes(transaction["input"]) != want:
            return f"its data is {bytes(transaction['input']).hex()}, the checkpoint's is {want.hex()}"
        sender = str(transaction["from"])
        if sender.lower() != str(receipt["from"]).lower() or str(transaction.get("to", "")).lower() != sender.lower():
            return f"it was sent by {sender} to {transaction.get('to')}, not by {receipt['from']} to itself"
        block_hash = transaction["blockHash"]
        if block_hash is None:
            return "it is not mined yet"
        if transaction["blockNumber"] != receipt["block_number"] or block_hash.to_0x_hex() != receipt["block_hash"]:
            return (f"it is in block {transaction['blockNumber']} {block_hash.to_0x_hex()}, the receipt says "
                    f"{receipt['block_number']} {receipt['block_hash']}")
        if eth.get_transaction_receipt(tx_hash)["status"] != 1:
            return "the transaction failed on chain"
        return None


def _unreachable(error: BaseException) -> bool:
    """Whether an exception means the node could not be reached (not that it answered no)."""
    import requests

    return isinstance(error, requests.exceptions.ConnectionError | requests.exceptions.Timeout | ConnectionError)

"""Helpers for the ledger-bundle tests: a real room's log, cut into checkpoints, anchored, exported.

`make_bundle` plays a short session in a real `sessions.room.Room` (joins, annotations with non-ASCII
labels, updates, deletes, clip planes, a leave, the close), cuts a checkpoint by `CheckpointPolicy`, anchors
each one on a `LocalAnchorChain` that another room's checkpoints also use (so this room's records are not
consecutive), adds one anchored EVM receipt (`EVM_RECEIPT`, checked only through `rpc_check`) and one
pending EVM anchoring, and returns everything needed to write, tamper with and re-sign the bundle.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rooms import Clock, new_room, point

from sessions.ledger.anchors import LocalAnchorChain
from sessions.ledger.bundle import (
    FILES,
    MANIFEST,
    Anchoring,
    BundleCheckpoint,
    BundleContents,
    manifest_text,
    sign_note,
)
from sessions.ledger.note import private_key_from_raw
from sessions.ledger.policy import CheckpointPolicy, cut_checkpoint, room_origin
from sessions.log import MemoryLogStore
from sessions.roles import Role

KEY = private_key_from_raw(bytes(range(32)))  # the published example key of docs/ledger.md: tests only
OTHER_KEY = private_key_from_raw(bytes(range(1, 33)))
EVM_RECEIPT = {"backend": "evm", "chain_id": 31337, "tx_hash": "0x" + "ab" * 32, "block_number": 7,
               "block_hash": "0x" + "cd" * 32, "from": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"}


@dataclass(frozen=True)
class Session:
    """A played room: its contents for write_bundle, the key, and each checkpoint's size."""

    contents: BundleContents
    key: Ed25519PrivateKey
    sizes: tuple[int, ...]


def make_bundle(events: int = 60, every: int = 9) -> Session:
    """A room of about `events` events, checkpointed every `every`, as bundle contents. Requires events >= 10."""
    clock = Clock()
    room = new_room({"ines": Role.INSTRUCTOR, "sam": Role.SURGEON, "stu": Role.STUDENT}, clock=clock,
                    store=MemoryLogStore())
    other = new_room({"obi": Role.OBSERVER}, clock=clock, store=MemoryLogStore())
    chain = LocalAnchorChain(sqlite3.connect(":memory:"), clock=clock)
    origin, policy = room_origin(room.id), CheckpointPolicy(every_events=every)
    checkpoints: list[BundleCheckpoint] = []

    def cut(final: bool = False) -> None:
        checkpoint, note = cut_checkpoint(room.log, origin, KEY, clock())
        other_checkpoint, _ = cut_checkpoint(other.log, "other.example/rooms/x", KEY, clock())
        chain.anchor(other_checkpoint, "someone-else")  # interleaved: this room's records are not consecutive
        local = Anchoring("local", "anchored", 1, None, chain.anchor(checkpoint, room.id))
        evm = Anchoring("evm", "pending", 3, "EvmUnavailable: connection refused") if final else \
            Anchoring("evm", "anchored", 2, None, EVM_RECEIPT) if len(checkpoints) == 1 else None
        checkpoints.append(BundleCheckpoint(note, tuple(a for a in (local, evm) if a is not None)))

    step = 0
    while room.seq < events - 2:
        step += 1
        sender = ("ines", "sam", "stu")[step % 3]
        if step % 5 == 0 and room.state.annotations:
            annotation = sorted(room.state.annotations)[0]
            room.apply({"kind": "annotation.delete", "id": annotation}, "ines", clock())
        elif step % 8 == 0:
            room.apply({"kind": "clip.clear"}, "ines", clock())
        elif step % 4 == 0:
            room.apply({"kind": "clip.set", "plane": {"normal": [0.0, 0.0, 1.0], "constant": step / 8}},
                       "ines", clock())
        else:
            room.apply(point(step * 1.5, label=f"Ventrikel — links {step} ✓"), sender, clock())
        if policy.due(room.seq, checkpoints_size(checkpoints), 0, 0):
            cut()
    room.leave("stu", clock())
    room.close(clock())
    cut(final=True)
    leaves = list(room.log.leaves())
    contents = BundleContents(room.id, origin, leaves, checkpoints, chain.for_room(room.id), chain.head())
    sizes = tuple(int(c.note.split("\n")[1]) for c in checkpoints)
    return Session(contents, KEY, sizes)


def checkpoints_size(checkpoints: list[BundleCheckpoint]) -> int:
    """The size of the last checkpoint, or 0."""
    return int(checkpoints[-1].note.split("\n")[1]) if checkpoints else 0


def resign(folder: Path, key: Ed25519PrivateKey = KEY) -> None:
    """Rewrite manifest.note of the bundle folder for its current files (what only the key holder can do),
    so that a test isolates the check it is about from the manifest's."""
    old = (folder / MANIFEST).read_text(encoding="utf-8").split("\n")
    room, origin = old[1].removeprefix("room "), old[2].removeprefix("origin ")
    size = (folder / "events.jsonl").read_bytes().count(b"\n")
    digests = {}
    for name in FILES:
        data = (folder / name).read_bytes()
        digests[name] = (hashlib.sha256(data).hexdigest(), len(data))
    (folder / MANIFEST).write_text(sign_note(manifest_text(room, origin, size, digests), origin, key),
                                   encoding="utf-8")


def with_checkpoints(session: Session, checkpoints: list[BundleCheckpoint]) -> BundleContents:
    """The session's contents with other checkpoints."""
    return replace(session.contents, checkpoints=checkpoints)

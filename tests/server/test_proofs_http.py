"""Proofs over HTTP, checked independently of the server's code: the handlers of server/api/ledger.py in a
minimal aiohttp app, and in this file a small RFC 6962 / RFC 9162 reference (the tree hash, PATH and
PROOF of RFC 6962 section 2.1, and the verification algorithms of RFC 9162 section 2.1.3.2 and 2.1.4.2)
plus a hand-rolled signed-note check with `cryptography`. Nothing here imports sessions.ledger.merkle."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rooms import Clock, new_room, point, sqlite_store

from server.api.ledger import routes
from server.appkeys import LEDGER, ROOM_LOGS
from server.middleware.errors import json_errors
from server.services.ledger import LedgerService
from server.storage.checkpoints import CheckpointStore
from server.storage.keys import SIGNING_KEY_FILE as KEY_FILE
from server.storage.keys import load_or_create_signing_key
from sessions.ledger.anchors import LocalAnchorChain
from sessions.ledger.policy import CheckpointPolicy
from sessions.ledger.sqlite import connect
from sessions.ledger.verify import verify_bundle
from sessions.roles import Role

# ---- an independent reference -------------------------------------------------------------------------


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 2.1: the Merkle Tree Hash of a list of leaf inputs."""
    if not leaves:
        return sha(b"")
    if len(leaves) == 1:
        return sha(b"\x00" + leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return sha(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 2.1.1: PATH(m, D[n])."""
    if len(leaves) <= 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    """RFC 6962 2.1.2: SUBPROOF(m, D[n], b)."""
    if m == len(leaves):
        return [] if whole else [mth(leaves)]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m <= k:
        return [*subproof(m, leaves[:k], whole), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


def root_from_inclusion(index: int, size: int, leaf_hash: bytes, proof: list[bytes]) -> bytes:
    """RFC 9162 2.1.3.2, steps 1-5."""
    assert 0 <= index < size
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        assert sn != 0
        if fn & 1 or fn == sn:
            r = sha(b"\x01" + p + r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = sha(b"\x01" + r + p)
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0
    return r


def roots_from_consistency(first: int, second: int, first_root: bytes, proof: list[bytes]) -> tuple[bytes, bytes]:
    """RFC 9162 2.1.4.2, steps 1-7: (root of the first tree, root of the second)."""
    if first == second:
        assert proof == []
        return first_root, first_root
    if first & (first - 1) == 0:
        proof = [first_root, *proof]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        assert sn != 0
        if fn & 1 or fn == sn:
            fr, sr = sha(b"\x01" + c + fr), sha(b"\x01" + c + sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = sha(b"\x01" + sr + c)
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0
    return fr, sr


def checked_note(note: str, public_key: bytes) -> tuple[str, int, bytes]:
    """(origin, size, root) of a C2SP checkpoint note whose one signature verifies under `public_key`."""
    text, signature_line = note.split("\n\n")
    text += "\n"
    name, blob = signature_line.removeprefix("— ").removesuffix("\n").split(" ")
    signature = base64.b64decode(blob)
    key_id = sha(name.encode() + b"\n\x01" + public_key)[:4]
    assert signature[:4] == key_id
    Ed25519PublicKey.from_public_bytes(public_key).verify(signature[4:], text.encode())  # raises if forged
    origin, size, root, time = text.split("\n")[:4]
    assert origin == name and time.startswith("time ")
    return origin, int(size), base64.b64decode(root)


# ---- the app --------------------------------------------------------------------------------------------


@pytest.fixture
def room(tmp_path: Path):
    clock = Clock()
    room = new_room({"ines": Role.INSTRUCTOR, "sam": Role.SURGEON}, store=sqlite_store(tmp_path), clock=clock)
    return room, clock


@pytest.fixture
async def client(aiohttp_client, tmp_path: Path, room):
    room, clock = room
    conn = connect(tmp_path / "ledger.sqlite")
    chain = LocalAnchorChain(conn)
    service = LedgerService(CheckpointStore(conn), load_or_create_signing_key(tmp_path / KEY_FILE), [chain],
                               policy=CheckpointPolicy(every_events=7), chain=chain)
    for i in range(30):
        room.apply(point(float(i), label=f"Läsion {i}"), "ines" if i % 2 else "sam", clock())
        service.appended(room.log)
    await service.anchor_due()
    app = web.Application(middlewares=[json_errors])
    app[LEDGER] = service
    app[ROOM_LOGS] = lambda room_id: room.log if room_id == room.id else None
    app.add_routes(routes())
    return await aiohttp_client(app)


def leaves_of(room) -> list[bytes]:
    return list(room.log.leaves())


async def test_the_key_endpoint(client, room):
    room, _ = room
    body = await (await client.get("/api/ledger/key")).json()
    public_key = base64.b64decode(body["public_key"])
    assert body["algorithm"] == "Ed25519" and public_key.hex() == body["public_key_hex"]
    assert body["pem"].startswith("-----BEGIN PUBLIC KEY-----")
    body = await (await client.get("/api/ledger/key", params={"room": room.id})).json()
    name, key_id, key = body["vkey"].split("+", 2)
    assert name == body["origin"] == f"theatrum.local/rooms/{room.id}"
    assert base64.b64decode(key) == b"\x01" + public_key
    assert bytes.fromhex(key_id) == sha(name.encode() + b"\n\x01" + public_key)[:4]


async def test_every_inclusion_proof_verifies_against_its_signed_checkpoint(client, room):
    room, _ = room
    leaves = leaves_of(room)
    public_key = base64.b64decode((await (await client.get("/api/ledger/key")).json())["public_key"])
    sizes = [c["size"] for c in (await (await client.get(f"/api/rooms/{room.id}/checkpoints")).json())["checkpoints"]]
    assert sizes == [7, 14, 21, 28]
    for seq in range(1, len(leaves) + 1):
        for size in [None, *(s for s in sizes if s >= seq)]:
            params = {"seq": seq} if size is None else {"seq": seq, "size": size}
            response = await client.get(f"/api/rooms/{room.id}/proof", params=params)
            assert response.status == 200, await response.text()
            body = await response.json()
            origin, signed_size, signed_root = checked_note(body["checkpoint"], public_key)
            assert origin == f"theatrum.local/rooms/{room.id}"
            tree = body["tree_size"]
            assert signed_size == tree and (size is None or tree == size)
            assert body["leaf"].encode() == leaves[seq - 1] and body["index"] == seq - 1
            leaf_hash = sha(b"\x00" + body["leaf"].encode())
            proof = [bytes.fromhex(h) for h in body["proof"]]
            assert bytes.fromhex(body["leaf_hash"]) == leaf_hash
            assert proof == path(seq - 1, leaves[:tree])
            assert root_from_inclusion(seq - 1, tree, leaf_hash, proof) == signed_root == mth(leaves[:tree])
    # seq 29 and 30 are past the last checkpoint: the default cuts one covering the head, then proves
    body = await (await client.get(f"/api/rooms/{room.id}/proof", params={"seq": 30})).json()
    assert body["tree_size"] == len(leaves) and checked_note(body["checkpoint"], public_key)[1] == len(leaves)


async def test_consistency_proofs_verify_between_checkpoints_and_any_sizes(client, room):
    room, _ = room
    leaves = leaves_of(room)
    public_key = base64.b64decode((await (await client.get("/api/ledger/key")).json())["public_key"])
    for first in range(1, len(leaves) + 1):
        for second in (first, min(len(leaves), first + 1), 14, 28, len(leaves)):
            if second < first:
                continue
            response = await client.get(f"/api/rooms/{room.id}/consistency", params={"from": first, "to": second})
            assert response.status == 200, await response.text()
            body = await response.json()
            proof = [bytes.fromhex(h) for h in body["proof"]]
            if first < second:
                assert proof == subproof(first, leaves[:second], True)
            old, new = roots_from_consistency(first, second, bytes.fromhex(body["from_root"]), proof)
            assert old == mth(leaves[:first]) == bytes.fromhex(body["from_root"])
            assert new == mth(leaves[:second]) == bytes.fromhex(body["to_root"])
            for size, note in ((first, body["from_checkpoint"]), (second, body["to_checkpoint"])):
                if size in (7, 14, 21, 28):
                    assert checked_note(note, public_key)[1:] == (size, mth(leaves[:size]))
                else:
                    assert note is None


async def test_the_export_endpoint_returns_a_bundle_that_verifies(client, room):
    room, _ = room
    response = await client.get(f"/api/rooms/{room.id}/export")
    assert response.status == 200 and response.content_type == "application/zip"
    assert f'filename="{room.id}-ledger-{room.seq}.zip"' in response.headers["Content-Disposition"]
    data = await response.read()
    report = verify_bundle(data)
    assert report.ok, report.failure
    assert (report.events, report.checkpoints, report.local_anchors) == (room.seq, 5, 4)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("events.jsonl") == b"".join(leaf + b"\n" for leaf in leaves_of(room))


@pytest.mark.parametrize(("url", "status"), [
    ("/api/rooms/nope/proof?seq=1", 404),
    ("/api/rooms/{room}/proof", 400),
    ("/api/rooms/{room}/proof?seq=0", 400),
    ("/api/rooms/{room}/proof?seq=x", 400),
    ("/api/rooms/{room}/proof?seq=99", 404),
    ("/api/rooms/{room}/proof?seq=3&size=8", 404),
    ("/api/rooms/{room}/proof?seq=9&size=7", 400),
    ("/api/rooms/{room}/consistency?from=5&to=3", 400),
    ("/api/rooms/{room}/consistency?from=1&to=99", 400),
    ("/api/rooms/{room}/consistency", 400),
    ("/api/rooms/nope/export", 404),
    ("/api/ledger/key?room=a+b", 400),
])
async def test_bad_requests(client, room, url: str, status: int):
    room, _ = room
    response = await client.get(url.format(room=room.id))
    assert response.status == status
    assert (await response.json())["error"] in ("bad_parameter", "not_found")

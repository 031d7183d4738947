"""HTTP handlers of the ledger: the server's public key, a room's checkpoints, its export bundle, and
inclusion and consistency proofs. The service behind them is server/services/ledger.py.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from aiohttp import web

from server.api.errors import ApiError
from server.api.params import query_int
from server.appkeys import LEDGER, ROOM_LOGS, UNVERIFIED_ROOMS
from server.services.ledger import LedgerService
from server.storage.errors import CorruptStoreError
from sessions.ledger.bundle import bundle_bytes, public_key_pem
from sessions.ledger.merkle import ProofError, leaf_hash, verify_consistency, verify_inclusion
from sessions.ledger.note import CheckpointError
from sessions.ledger.tree import SizeError
from sessions.log import EventLog


def _service(request: web.Request) -> LedgerService:
    return request.app[LEDGER]


def _log_or_404(request: web.Request) -> EventLog:
    room_id = request.match_info["room_id"]
    room_log = request.app[ROOM_LOGS](room_id)
    if room_log is None:
        raise ApiError(404, "not_found", f"no room {room_id!r}")
    if room_log.size == 0:
        raise ApiError(409, "conflict", f"room {room_id} has no events yet")
    reason = request.app.get(UNVERIFIED_ROOMS, {}).get(room_id)
    if reason is not None:
        raise CorruptStoreError(reason)
    return room_log


async def ledger_key(request: web.Request) -> web.Response:
    """GET /api/ledger/key[?room=ID]: the server's Ed25519 public key; with a room, its verifier key."""
    service = _service(request)
    public_key = service.public_key
    body: dict[str, Any] = {
        "algorithm": "Ed25519",
        "public_key": base64.b64encode(public_key).decode("ascii"),
        "public_key_hex": public_key.hex(),
        "pem": public_key_pem(public_key).decode("ascii"),
        "origin_prefix": service.origin_prefix,
        "key_name": "the room's log origin: <origin_prefix>/<room id>",
    }
    room = request.query.get("room")
    if room:
        try:
            verifier = service.verifier(room)
        except CheckpointError as error:
            raise ApiError(400, "bad_parameter", f"room: {error}") from None
        body.update(room=room, origin=verifier.name, vkey=verifier.vkey())
    return web.json_response(body)


async def room_checkpoints(request: web.Request) -> web.Response:
    """GET /api/rooms/{room_id}/checkpoints: every checkpoint with its anchoring status."""
    room_log = _log_or_404(request)
    return web.json_response(_service(request).status(room_log.room))


async def export_room(request: web.Request) -> web.Response:
    """GET /api/rooms/{room_id}/export: the ledger bundle (zip) up to a checkpoint of the current head."""
    service, room_log = _service(request), _log_or_404(request)
    stored = service.ensure_checkpoint(room_log)
    leaves = await _leaves(room_log, stored.size)
    contents = service.bundle_contents(room_log.room, stored.size, leaves)
    body = await asyncio.to_thread(bundle_bytes, contents, service.key)
    name = f"{room_log.room}-ledger-{stored.size}.zip"
    return web.Response(body=body, content_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


async def _leaves(room_log: EventLog, size: int) -> list[bytes]:
    """The leaf bytes of seq 1..size, letting the event loop run between pages."""
    leaves: list[bytes] = []
    for leaf in room_log.leaves(0, size):
        leaves.append(leaf)
        if len(leaves) % 4096 == 0:
            await asyncio.sleep(0)
    if len(leaves) != size:
        raise ApiError(500, "internal_error", f"room {room_log.room}: {len(leaves)} events stored, want {size}")
    return leaves


async def inclusion_proof(request: web.Request) -> web.Response:
    """GET /api/rooms/{room_id}/proof?seq=n[&size=m]: event n's inclusion proof against the checkpoint at
    size m (default: the smallest checkpoint covering n, cut now if none does)."""
    service, room_log = _service(request), _log_or_404(request)
    seq = query_int(request, "seq", low=1)
    if seq > room_log.size:
        raise ApiError(404, "not_found", f"room {room_log.room} has {room_log.size} events, no seq {seq}")
    if "size" in request.query:
        size = query_int(request, "size", low=1)
        stored = service.store.at(room_log.room, size)
        if stored is None:
            raise ApiError(404, "not_found", f"room {room_log.room} has no checkpoint at size {size}")
        if size < seq:
            raise ApiError(400, "bad_parameter", f"the checkpoint at size {size} does not cover seq {seq}")
    else:
        stored = service.store.covering(room_log.room, seq) or service.ensure_checkpoint(room_log)
    (leaf,) = room_log.leaves(seq - 1, seq)
    proof = room_log.inclusion_proof(seq, stored.size)
    try:  # never hand out a proof that does not verify: a stored node may have been altered
        verify_inclusion(leaf_hash(leaf), seq - 1, stored.size, proof, stored.checkpoint.root)
    except ProofError as error:
        raise CorruptStoreError(f"room {room_log.room}: the stored tree gives seq {seq} a proof that does not "
                                f"verify against checkpoint {stored.size} ({error})") from None
    return web.json_response({
        "room": room_log.room, "seq": seq, "index": seq - 1, "tree_size": stored.size,
        "leaf": leaf.decode("utf-8"), "leaf_hash": room_log.leaf_hash(seq).hex(),
        "root": stored.checkpoint.root.hex(), "proof": [h.hex() for h in proof], "checkpoint": stored.note,
    })


async def consistency_proof(request: web.Request) -> web.Response:
    """GET /api/rooms/{room_id}/consistency?from=a[&to=b]: the proof that the tree at size b extends the
    tree at size a (b defaults to the latest checkpoint); with the checkpoint notes at a and b if cut."""
    service, room_log = _service(request), _log_or_404(request)
    first = query_int(request, "from", low=1)
    latest = None if request.query.get("to") else service.ensure_checkpoint(room_log)
    second = latest.size if latest is not None else query_int(request, "to", low=1)
    if not first <= second <= room_log.size:
        raise ApiError(400, "bad_parameter",
                       f"need 1 <= from <= to <= {room_log.size}, got from={first} to={second}")
    try:
        proof = room_log.consistency_proof(first, second)
    except SizeError as error:
        raise ApiError(400, "bad_parameter", str(error)) from None
    try:
        verify_consistency(first, second, proof, room_log.root(first), room_log.root(second))
    except ProofError as error:
        raise CorruptStoreError(f"room {room_log.room}: the stored tree gives a consistency proof {first} -> "
                                f"{second} that does not verify ({error})") from None
    notes = [service.store.at(room_log.room, size) for size in (first, second)]
    return web.json_response({
        "room": room_log.room, "from": first, "to": second,
        "from_root": room_log.root(first).hex(), "to_root": room_log.root(second).hex(),
        "proof": [h.hex() for h in proof],
        "from_checkpoint": notes[0].note if notes[0] else None, "to_checkpoint": notes[1].note if notes[1] else None,
    })


def routes() -> list[web.RouteDef]:
    """The ledger's routes, to add to server/app.py's route list."""
    return [
        web.get("/api/ledger/key", ledger_key),
        web.get("/api/rooms/{room_id}/checkpoints", room_checkpoints),
        web.get("/api/rooms/{room_id}/export", export_room),
        web.get("/api/rooms/{room_id}/proof", inclusion_proof),
        web.get("/api/rooms/{room_id}/consistency", consistency_proof),
    ]

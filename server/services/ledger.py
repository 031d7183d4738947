"""The ledger service: the server's signing key, checkpoints cut by policy, anchoring in the background,
and the HTTP handlers for the key, the export bundle and the inclusion and consistency proofs.

- The Ed25519 key is created on first run (`ledger-key.pem` in the data folder, PKCS#8, 0600, written
  atomically and never over an existing key).
- After each append the hub calls `LedgerService.appended(log)`; the `CheckpointPolicy` decides whether to
  cut (every N events); a tick cuts rooms whose last checkpoint is T seconds old with events since; closing
  a room cuts at once. A cut signs the head (a C2SP note, key name = the room's origin) and stores it in
  `ledger.sqlite` (table `checkpoints`), with one `anchorings` row per configured backend.
- One worker task per backend anchors due checkpoints: `local` (the embedded LocalAnchorChain, same
  database) on the event loop, `evm` (server/evm.py) in a thread. A failure never blocks a room: the row
  stays queued (status `pending`, attempts and last error recorded) and is retried with exponential backoff;
  after `max_attempts` it is `failed` until `retry_failed()` requeues it. Rows survive restarts.

Everything here runs on the event loop's thread, except the EVM calls and the zip compression of an export.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.middleware.errors import ApiError
from sessions.ledger.anchors import Anchor, AnchorBackend, LocalAnchorChain
from sessions.ledger.bundle import Anchoring, BundleCheckpoint, BundleContents, bundle_bytes, public_key_pem
from sessions.ledger.note import (
    Checkpoint,
    CheckpointError,
    Verifier,
    generate_signing_key,
    private_key_from_pem,
    private_key_to_pem,
    public_key_bytes,
    verifier_for,
)
from sessions.ledger.policy import DEFAULT_ORIGIN_PREFIX, CheckpointPolicy, cut_checkpoint, room_origin
from sessions.ledger.sqlite import connect
from sessions.ledger.tree import SizeError
from sessions.log import EventLog, LogCorruptError

logger = logging.getLogger("theatrum.ledger")

KEY_FILE = "ledger-key.pem"
LEDGER_DB = "ledger.sqlite"
PENDING, ANCHORED, FAILED = "pending", "anchored", "failed"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS checkpoints (room TEXT NOT NULL, size INTEGER NOT NULL, origin TEXT NOT NULL,"
    " root BLOB NOT NULL, time INTEGER NOT NULL, note TEXT NOT NULL, PRIMARY KEY (room, size)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS anchorings (room TEXT NOT NULL, size INTEGER NOT NULL, backend TEXT NOT NULL,"
    " status TEXT NOT NULL, attempts INTEGER NOT NULL, last_error TEXT, next_attempt INTEGER NOT NULL,"
    " receipt TEXT, PRIMARY KEY (room, size, backend)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS anchorings_due ON anchorings (backend, status, next_attempt)",
)


def now_ms() -> int:
    """Server time in ms since the Unix epoch."""
    return time.time_ns() // 1_000_000


# ---- the key ---------------------------------------------------------------------------------------------


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 key in `path` (PKCS#8 PEM), created 0600 if absent. Never overwrites an existing key."""
    if not path.exists():
        key = generate_signing_key()
        if _write_new(path, private_key_to_pem(key)):
            return key
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return private_key_from_pem(path.read_bytes())


def _write_new(path: Path, data: bytes) -> bool:
    """Write `data` to `path` atomically (0600) unless it exists; False if another writer won."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)  # mkstemp creates the file 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, path)  # atomic, and fails if the key exists: a racing second start keeps the first key
    except FileExistsError:
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)
    return True


# ---- configuration ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retry:
    """Exponential backoff: `base` s, doubling, capped at `cap` s; `failed` after `max_attempts`."""

    base: float = 2.0
    cap: float = 600.0
    max_attempts: int = 50

    def delay_ms(self, attempts: int) -> int:
        """Wait after the `attempts`-th failure. Requires attempts >= 1."""
        return round(min(self.cap, self.base * 2 ** min(attempts - 1, 60)) * 1000)


@dataclass(frozen=True)
class LedgerConfig:
    """How the server checkpoints and anchors. `anchors` names the backends: "local", "evm"."""

    every_events: int = 100
    every_seconds: float = 10.0
    origin_prefix: str = DEFAULT_ORIGIN_PREFIX
    anchors: tuple[str, ...] = ("local",)
    evm_rpc: str = ""
    evm_key: str = ""
    evm_timeout: float = 120.0
    retry: Retry = Retry()

    @classmethod
    def from_settings(cls, settings: Any) -> LedgerConfig:
        """The config from server Settings fields ledger_every_events, ledger_every_seconds, ledger_origin,
        ledger_anchors, evm_rpc, evm_key (each optional: defaults apply). Requires nothing."""
        default = cls()
        anchors = getattr(settings, "ledger_anchors", default.anchors)
        if isinstance(anchors, str):
            anchors = tuple(a.strip() for a in anchors.split(",") if a.strip())
        return cls(
            every_events=getattr(settings, "ledger_every_events", default.every_events),
            every_seconds=getattr(settings, "ledger_every_seconds", default.every_seconds),
            origin_prefix=getattr(settings, "ledger_origin", default.origin_prefix) or default.origin_prefix,
            anchors=tuple(anchors),
            evm_rpc=getattr(settings, "evm_rpc", ""),
            evm_key=getattr(settings, "evm_key", ""),
        )


# ---- stored checkpoints and their anchorings ---------------------------------------------------------------


@dataclass(frozen=True)
class StoredCheckpoint:
    """A cut checkpoint of `room` and its signed note."""

    room: str
    checkpoint: Checkpoint
    note: str

    @property
    def size(self) -> int:
        return self.checkpoint.size


@dataclass(frozen=True)
class AnchoringRow:
    """Where checkpoint (room, size) stands with one backend. `next_attempt` is ms since the epoch."""

    room: str
    size: int
    backend: str
    status: str
    attempts: int
    last_error: str | None
    next_attempt: int
    receipt: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        """The API view. Requires nothing."""
        return {"backend": self.backend, "status": self.status, "attempts": self.attempts,
                "last_error": self.last_error,
                "next_attempt": self.next_attempt / 1000 if self.status == PENDING else None,
                "receipt": self.receipt}

    def anchoring(self) -> Anchoring:
        """The bundle's record of it. Requires nothing."""
        return Anchoring(self.backend, self.status, self.attempts, self.last_error, self.receipt)


class CheckpointStore:
    """Tables `checkpoints` and `anchorings` of the ledger database. Every write commits."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        with conn:
            for statement in _SCHEMA:
                conn.execute(statement)

    def add(self, room: str, checkpoint: Checkpoint, note: str, backends: Sequence[str], now: int) -> None:
        """Store a cut checkpoint and queue it for each backend, in one commit. Requires a new size."""
        with self.conn:
            self.conn.execute(
                "INSERT INTO checkpoints (room, size, origin, root, time, note) VALUES (?, ?, ?, ?, ?, ?)",
                (room, checkpoint.size, checkpoint.origin, checkpoint.root, checkpoint.time, note))
            self.conn.executemany(
                "INSERT INTO anchorings (room, size, backend, status, attempts, next_attempt)"
                " VALUES (?, ?, ?, ?, 0, ?)", [(room, checkpoint.size, b, PENDING, now) for b in backends])

    def checkpoints(self, room: str, up_to: int | None = None) -> list[StoredCheckpoint]:
        """The checkpoints of `room` with size <= up_to (None: all), oldest first."""
        return self._checkpoints("WHERE room = ? AND size <= ? ORDER BY size", (room, _bound(up_to)))

    def latest(self, room: str) -> StoredCheckpoint | None:
        """The room's largest checkpoint, or None."""
        rows = self._checkpoints("WHERE room = ? ORDER BY size DESC LIMIT 1", (room,))
        return rows[0] if rows else None

    def at(self, room: str, size: int) -> StoredCheckpoint | None:
        """The room's checkpoint at `size`, or None."""
        rows = self._checkpoints("WHERE room = ? AND size = ?", (room, size))
        return rows[0] if rows else None

    def covering(self, room: str, size: int) -> StoredCheckpoint | None:
        """The room's smallest checkpoint of at least `size` events, or None."""
        rows = self._checkpoints("WHERE room = ? AND size >= ? ORDER BY size LIMIT 1", (room, size))
        return rows[0] if rows else None

    def anchorings(self, room: str, up_to: int | None = None) -> list[AnchoringRow]:
        """The anchoring rows of `room` (sizes <= up_to), by size then backend."""
        return self._anchorings("WHERE room = ? AND size <= ? ORDER BY size, backend", (room, _bound(up_to)))

    def due(self, backend: str, now: int, limit: int = 32) -> list[AnchoringRow]:
        """Pending rows of `backend` whose next attempt is due, oldest first."""
        return self._anchorings("WHERE backend = ? AND status = ? AND next_attempt <= ?"
                                " ORDER BY next_attempt, room, size LIMIT ?", (backend, PENDING, now, limit))

    def next_due(self, backend: str) -> int | None:
        """When the next pending row of `backend` is due (ms), or None."""
        (when,) = self.conn.execute("SELECT MIN(next_attempt) FROM anchorings WHERE backend = ? AND status = ?",
                                    (backend, PENDING)).fetchone()
        return when

    def succeeded(self, row: AnchoringRow, receipt: Mapping[str, Any]) -> None:
        """Record the receipt: anchored."""
        with self.conn:
            self.conn.execute(
                "UPDATE anchorings SET status = ?, attempts = attempts + 1, last_error = NULL, receipt = ?"
                " WHERE room = ? AND size = ? AND backend = ?",
                (ANCHORED, json.dumps(dict(receipt), sort_keys=True), row.room, row.size, row.backend))

    def failed(self, row: AnchoringRow, error: str, next_attempt: int, give_up: bool) -> None:
        """Record a failed attempt: retried at `next_attempt`, or `failed` if `give_up`."""
        with self.conn:
            self.conn.execute(
                "UPDATE anchorings SET status = ?, attempts = attempts + 1, last_error = ?, next_attempt = ?"
                " WHERE room = ? AND size = ? AND backend = ?",
                (FAILED if give_up else PENDING, error[:500], next_attempt, row.room, row.size, row.backend))

    def requeue_failed(self, now: int) -> int:
        """Put every failed row back in the queue for a new round of attempts; returns how many."""
        with self.conn:
            cursor = self.conn.execute(
                "UPDATE anchorings SET status = ?, attempts = 0, next_attempt = ? WHERE status = ?",
                (PENDING, now, FAILED))
        return cursor.rowcount

    def _checkpoints(self, clause: str, parameters: tuple[Any, ...]) -> list[StoredCheckpoint]:
        rows = self.conn.execute(
            "SELECT room, size, origin, root, time, note FROM checkpoints " + clause, parameters).fetchall()
        return [StoredCheckpoint(room, Checkpoint(origin, size, bytes(root), at), note)
                for room, size, origin, root, at, note in rows]

    def _anchorings(self, clause: str, parameters: tuple[Any, ...]) -> list[AnchoringRow]:
        rows = self.conn.execute(
            "SELECT room, size, backend, status, attempts, last_error, next_attempt, receipt FROM anchorings "
            + clause, parameters).fetchall()
        return [AnchoringRow(*row[:7], json.loads(row[7]) if row[7] is not None else None) for row in rows]


def _bound(up_to: int | None) -> int:
    return 2**63 - 1 if up_to is None else up_to


# ---- the service -----------------------------------------------------------------------------------------


RoomLogs = Callable[[str], "EventLog | None"]
"""How the service finds a room's log by id (None: no such room). See `hub_logs`."""


class _HasRooms(Protocol):
    rooms: Mapping[str, Any]


def hub_logs(hub: _HasRooms) -> RoomLogs:
    """The RoomLogs of server/hub.py's Hub: `hub.rooms[room_id].room.log`."""

    def logs(room_id: str) -> EventLog | None:
        live = hub.rooms.get(room_id)
        return live.room.log if live is not None else None

    return logs


@dataclass
class _Watch:
    """A room the service follows: its log, what its checkpoints cover, and since when (ms)."""

    log: EventLog
    covered: int
    since: int


class LedgerService:
    """Checkpoints and anchors for every room. Call `appended` after each append, `closed` at room close."""

    def __init__(self, store: CheckpointStore, key: Ed25519PrivateKey, backends: Sequence[AnchorBackend], *,
                 logs: RoomLogs, policy: CheckpointPolicy | None = None,
                 origin_prefix: str = DEFAULT_ORIGIN_PREFIX, chain: LocalAnchorChain | None = None,
                 retry: Retry | None = None, clock: Callable[[], int] = now_ms):
        self.store = store
        self.key = key
        self.backends = {backend.name: backend for backend in backends}
        self.logs = logs
        self.policy = policy or CheckpointPolicy()
        self.origin_prefix = origin_prefix
        self.chain = chain
        self.retry = retry or Retry()
        self.clock = clock
        self._watched: dict[str, _Watch] = {}
        self._wake = {name: asyncio.Event() for name in self.backends}
        self._tasks: list[asyncio.Task] = []

    @classmethod
    def open(cls, data: Path, config: LedgerConfig, logs: RoomLogs) -> LedgerService:
        """The service over `data`/ledger.sqlite and `data`/ledger-key.pem with `config`'s backends."""
        key = load_or_create_signing_key(data / KEY_FILE)
        conn = connect(data / LEDGER_DB)
        chain = LocalAnchorChain(conn)
        backends: list[AnchorBackend] = []
        for name in config.anchors:
            if name == "local":
                backends.append(chain)
            elif name == "evm":
                from server.services.evm import EvmAnchor

                if not config.evm_rpc or not config.evm_key:
                    raise ValueError("the evm anchor needs THEATRUM_EVM_RPC and THEATRUM_EVM_KEY")
                backends.append(EvmAnchor(config.evm_rpc, config.evm_key, timeout=config.evm_timeout))
            else:
                raise ValueError(f"unknown anchor backend {name!r} (known: local, evm)")
        return cls(CheckpointStore(conn), key, backends, logs=logs,
                   policy=CheckpointPolicy(config.every_events, config.every_seconds),
                   origin_prefix=config.origin_prefix, chain=chain, retry=config.retry)

    # ---- keys and origins ------------------------------------------------------------------------

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return public_key_bytes(self.key)

    def origin(self, room: str) -> str:
        """The room's log origin (= key name): its first checkpoint's, else `<prefix>/<room>`."""
        latest = self.store.latest(room)
        return latest.checkpoint.origin if latest is not None else room_origin(room, self.origin_prefix)

    def verifier(self, room: str) -> Verifier:
        """The note verifier of the room's checkpoints. Requires a room id usable in an origin."""
        return verifier_for(self.origin(room), self.key)

    # ---- cutting ---------------------------------------------------------------------------------

    def watch(self, log: EventLog) -> None:
        """Follow a room (e.g. every room at start), so the clock can cut its uncovered events.

        Raises LogCorruptError if the log no longer holds what its latest checkpoint signed: fewer events
        (rows were cut off the end) or another root at that size (rows were rewritten).
        """
        latest = self.store.latest(log.room)
        if latest is not None:
            signed = latest.checkpoint
            if signed.size > log.size:
                raise LogCorruptError(f"room {log.room}: the log holds {log.size} events, but checkpoint "
                                      f"{signed.size} was signed over {signed.size}")
            if log.merkle.root(signed.size) != signed.root:
                raise LogCorruptError(f"room {log.room}: the first {signed.size} events do not hash to the "
                                      "root of the checkpoint signed for them")
        self._watch(log)

    def appended(self, log: EventLog) -> StoredCheckpoint | None:
        """After an append: cut if the policy says so. Never raises for a storage problem (logs it)."""
        watch = self._watch(log)
        if self.policy.due(log.size, watch.covered, watch.since, self.clock()):
            return self._cut_safely(log)
        return None

    def closed(self, log: EventLog) -> StoredCheckpoint | None:
        """The room closed: cut whatever is uncovered, and stop following it."""
        watch = self._watch(log)
        cut = self._cut_safely(log) if self.policy.due_at_close(log.size, watch.covered) else None
        self._watched.pop(log.room, None)
        return cut

    def tick(self) -> list[StoredCheckpoint]:
        """Cut every followed room whose last checkpoint is `every_seconds` old with events since."""
        now, cuts = self.clock(), []
        for watch in list(self._watched.values()):
            if self.policy.due(watch.log.size, watch.covered, watch.since, now):
                cut = self._cut_safely(watch.log)
                if cut is not None:
                    cuts.append(cut)
        return cuts

    def ensure_checkpoint(self, log: EventLog) -> StoredCheckpoint:
        """A checkpoint covering the log's head, cut now if needed (for an export or a proof).

        Requires a non-empty log. Raises sqlite3.Error if the checkpoint cannot be stored.
        """
        latest = self.store.latest(log.room)
        if latest is not None and latest.size >= log.size:
            return latest
        return self._cut(log)

    def _watch(self, log: EventLog) -> _Watch:
        watch = self._watched.get(log.room)
        if watch is None or watch.log is not log:
            latest = self.store.latest(log.room)
            covered, since = (latest.size, latest.checkpoint.time) if latest else (0, self.clock())
            watch = self._watched[log.room] = _Watch(log, covered, since)
        return watch

    def _cut_safely(self, room_log: EventLog) -> StoredCheckpoint | None:
        """`_cut`, logging (not raising) a failure: a room must never stop for its ledger."""
        try:
            return self._cut(room_log)
        except (sqlite3.Error, CheckpointError, ValueError):
            logger.exception("room %s: the checkpoint at size %d could not be cut", room_log.room, room_log.size)
            return None

    def _cut(self, log: EventLog) -> StoredCheckpoint:
        """Sign the head, store it, queue its anchorings, wake the workers. Requires log.size > 0."""
        now = self.clock()
        checkpoint, note = cut_checkpoint(log.merkle, self.origin(log.room), self.key, now)
        self.store.add(log.room, checkpoint, note, list(self.backends), now)
        self._watched[log.room] = _Watch(log, checkpoint.size, checkpoint.time)
        for event in self._wake.values():
            event.set()
        return StoredCheckpoint(log.room, checkpoint, note)

    # ---- anchoring -------------------------------------------------------------------------------

    async def start(self, tick_seconds: float | None = None) -> None:
        """Start one anchoring worker per backend and the checkpoint clock."""
        period = tick_seconds if tick_seconds is not None else min(1.0, self.policy.every_seconds / 4)
        self._tasks = [asyncio.create_task(self._worker(name)) for name in self.backends]
        self._tasks.append(asyncio.create_task(self._clock(period)))

    async def stop(self) -> None:
        """Stop the workers and the clock (an EVM call in flight finishes in its thread; its row stays
        pending and is retried at the next start)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []

    async def anchor_due(self, backend: str | None = None) -> int:
        """One pass: attempt every due row (of one backend, or all); returns the number attempted."""
        attempted = 0
        for name in [backend] if backend else list(self.backends):
            for row in self.store.due(name, self.clock(), limit=1_000_000):
                await self._attempt(row)
                attempted += 1
        return attempted

    def retry_failed(self) -> int:
        """Requeue every `failed` anchoring now; returns how many."""
        count = self.store.requeue_failed(self.clock())
        for event in self._wake.values():
            event.set()
        return count

    async def _worker(self, name: str) -> None:
        """Attempt due rows of backend `name`; sleep until the next is due or a cut wakes it."""
        wake = self._wake[name]
        while True:
            try:
                rows = self.store.due(name, self.clock())
                for row in rows:
                    await self._attempt(row)
                if rows:
                    continue
                wake.clear()
                when = self.store.next_due(name)
            except sqlite3.Error:
                logger.exception("the %s anchoring queue could not be read; retrying in 5 s", name)
                await asyncio.sleep(5)
                continue
            timeout = None if when is None else max(0.0, (when - self.clock()) / 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)

    async def _clock(self, period: float) -> None:
        """Run `tick` every `period` seconds."""
        while True:
            await asyncio.sleep(period)
            try:
                self.tick()
            except sqlite3.Error:
                logger.exception("the checkpoint clock failed; it goes on")

    async def _attempt(self, row: AnchoringRow) -> None:
        """Anchor one checkpoint with one backend; record the receipt or the failure."""
        backend = self.backends[row.backend]
        stored = self.store.at(row.room, row.size)
        if stored is None:
            return
        try:
            if getattr(backend, "blocking", False):
                receipt = await asyncio.to_thread(backend.anchor, stored.checkpoint, row.room)
            else:
                receipt = backend.anchor(stored.checkpoint, row.room)
        except Exception as error:  # any failure of the target: queue it, never crash the worker
            attempts = row.attempts + 1
            give_up = attempts >= self.retry.max_attempts
            self.store.failed(row, f"{type(error).__name__}: {error}",
                              self.clock() + self.retry.delay_ms(attempts), give_up)
            logger.warning("room %s: anchoring checkpoint %d with %s failed (attempt %d%s): %s", row.room, row.size,
                        row.backend, attempts, ", giving up" if give_up else "", error)
            return
        self.store.succeeded(row, receipt)

    # ---- reading ---------------------------------------------------------------------------------

    def status(self, room: str) -> dict[str, Any]:
        """The room's checkpoints and their anchoring status, for the API."""
        anchorings: dict[int, list[dict[str, Any]]] = {}
        for row in self.store.anchorings(room):
            anchorings.setdefault(row.size, []).append(row.to_json())
        return {"room": room, "origin": self.origin(room), "checkpoints": [
            {"size": s.size, "root": s.checkpoint.root.hex(), "time": s.checkpoint.time, "note": s.note,
             "anchorings": anchorings.get(s.size, [])} for s in self.store.checkpoints(room)]}

    def bundle_contents(self, room: str, size: int, leaves: Sequence[bytes]) -> BundleContents:
        """What the export bundle of `room` up to the checkpoint at `size` holds. Requires its leaves 1..size."""
        stored = self.store.checkpoints(room, up_to=size)
        rows: dict[int, list[Anchoring]] = {}
        indices = set()
        for row in self.store.anchorings(room, up_to=size):
            rows.setdefault(row.size, []).append(row.anchoring())
            if row.backend == "local" and row.status == ANCHORED and row.receipt is not None:
                indices.add(row.receipt["index"])
        # Only records that are a checkpoint's receipt: a crash between a chain append and its status update
        # leaves a record that the retry then duplicates.
        records: list[Anchor] = []
        head = None
        if self.chain is not None:
            records = [a for a in self.chain.for_room(room) if a.index in indices]
            head = self.chain.head()
        checkpoints = [BundleCheckpoint(s.note, tuple(rows.get(s.size, ()))) for s in stored]
        return BundleContents(room, self.origin(room), leaves, checkpoints, records, head)


# ---- HTTP handlers ---------------------------------------------------------------------------------------


def _service(request: web.Request) -> LedgerService:
    return request.app["ledger"]


def _log_or_404(request: web.Request) -> EventLog:
    room_id = request.match_info["room_id"]
    room_log = _service(request).logs(room_id)
    if room_log is None:
        raise ApiError(404, "not_found", f"no room {room_id!r}")
    if room_log.size == 0:
        raise ApiError(409, "conflict", f"room {room_id} has no events yet")
    return room_log


def _int_parameter(request: web.Request, name: str, default: int | None = None, low: int = 1) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ApiError(400, "bad_parameter", f"{name} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name} must be an integer") from None
    if value < low:
        raise ApiError(400, "bad_parameter", f"{name} must be >= {low}")
    return value


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
    """The leaf bytes of seq 1..size, read a page at a time, letting the event loop run between pages."""
    leaves: list[bytes] = []
    for _, leaf in room_log.store.leaves(room_log.room, 0, size):
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
    seq = _int_parameter(request, "seq")
    if seq > room_log.size:
        raise ApiError(404, "not_found", f"room {room_log.room} has {room_log.size} events, no seq {seq}")
    if "size" in request.query:
        size = _int_parameter(request, "size")
        stored = service.store.at(room_log.room, size)
        if stored is None:
            raise ApiError(404, "not_found", f"room {room_log.room} has no checkpoint at size {size}")
        if size < seq:
            raise ApiError(400, "bad_parameter", f"the checkpoint at size {size} does not cover seq {seq}")
    else:
        stored = service.store.covering(room_log.room, seq) or service.ensure_checkpoint(room_log)
    index = seq - 1
    ((_, leaf),) = list(room_log.store.leaves(room_log.room, index, seq))
    proof = room_log.merkle.inclusion_proof(index, stored.size)
    return web.json_response({
        "room": room_log.room, "seq": seq, "index": index, "tree_size": stored.size,
        "leaf": leaf.decode("utf-8"), "leaf_hash": room_log.merkle.leaf(index).hex(),
        "root": stored.checkpoint.root.hex(), "proof": [h.hex() for h in proof], "checkpoint": stored.note,
    })


async def consistency_proof(request: web.Request) -> web.Response:
    """GET /api/rooms/{room_id}/consistency?from=a[&to=b]: the proof that the tree at size b extends the
    tree at size a (b defaults to the latest checkpoint); with the checkpoint notes at a and b if cut."""
    service, room_log = _service(request), _log_or_404(request)
    first = _int_parameter(request, "from")
    latest = None if request.query.get("to") else service.ensure_checkpoint(room_log)
    second = latest.size if latest is not None else _int_parameter(request, "to")
    if not first <= second <= room_log.size:
        raise ApiError(400, "bad_parameter",
                       f"need 1 <= from <= to <= {room_log.size}, got from={first} to={second}")
    try:
        proof = room_log.merkle.consistency_proof(first, second)
    except SizeError as error:
        raise ApiError(400, "bad_parameter", str(error)) from None
    notes = [service.store.at(room_log.room, size) for size in (first, second)]
    return web.json_response({
        "room": room_log.room, "from": first, "to": second,
        "from_root": room_log.merkle.root(first).hex(), "to_root": room_log.merkle.root(second).hex(),
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

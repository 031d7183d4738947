"""The ledger service: checkpoints cut by policy, and anchoring in the background.

- After each append the hub calls `LedgerService.appended(log)`; the `CheckpointPolicy` decides whether to
  cut (every N events); a tick cuts rooms whose last checkpoint is T seconds old with events since; closing
  a room cuts at once. A cut signs the head (a C2SP note, key name = the room's origin, with the key of
  server/storage/keys.py) and stores it in the ledger database (server/storage/checkpoints.py), with one
  anchoring row per configured backend.
- One worker task per backend anchors due checkpoints: `local` (the embedded LocalAnchorChain, same
  database) on the event loop, `evm` (server/services/evm.py) in a thread. A failure never blocks a room: the
  row stays queued (status `pending`, attempts and last error recorded) and is retried with exponential
  backoff; after `max_attempts` it is `failed` until `retry_failed()` requeues it. Rows survive restarts.

Everything here runs on the event loop's thread, except the EVM calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.clock import now_ms
from server.storage.checkpoints import (
    ANCHORED,
    LEDGER_DB,
    AnchoringRow,
    CheckpointStore,
    StoredCheckpoint,
)
from server.storage.errors import CorruptStoreError, StorageError, StorageFullError, database_errors, quick_check
from server.storage.keys import SIGNING_KEY_FILE, load_or_create_signing_key
from server.storage.postgres import PgConnection
from sessions.ledger.anchors import Anchor, AnchorBackend, LocalAnchorChain
from sessions.ledger.bundle import Anchoring, BundleCheckpoint, BundleContents
from sessions.ledger.note import CheckpointError, Verifier, parse_and_verify, public_key_bytes, verifier_for
from sessions.ledger.policy import DEFAULT_ORIGIN_PREFIX, CheckpointPolicy, cut_checkpoint, room_origin
from sessions.ledger.sqlite import connect
from sessions.log import EventLog, LogCorruptError

logger = logging.getLogger("theatrum.ledger")


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
        ledger_anchors, evm_rpc, evm_key (each optional: defaults apply)."""
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


@dataclass
class _Watch:
    """A room the service follows: its log, what its checkpoints cover, and since when (ms)."""

    log: EventLog
    covered: int
    since: int


CLAIM_MS = 60_000  # an anchoring attempt's hold on its row: then another process may try it (its own died)


class LedgerService:
    """Checkpoints and anchors for every room. Call `appended` after each append, `closed` at room close."""

    def __init__(self, store: CheckpointStore, key: Ed25519PrivateKey, backends: Sequence[AnchorBackend], *,
                 policy: CheckpointPolicy | None = None, path: Path | str = LEDGER_DB,
                 origin_prefix: str = DEFAULT_ORIGIN_PREFIX, chain: LocalAnchorChain | None = None,
                 retry: Retry | None = None, clock: Callable[[], int] = now_ms):
        self.store = store
        self.path = path  # of the ledger database, for messages
        self.key = key
        self.backends = {backend.name: backend for backend in backends}
        self.policy = policy or CheckpointPolicy()
        self.origin_prefix = origin_prefix
        self.chain = chain
        self.retry = retry or Retry()
        self.clock = clock
        self._watched: dict[str, _Watch] = {}
        self._full: set[str] = set()  # rooms whose last cut found the disk full
        self._wake = {name: asyncio.Event() for name in self.backends}
        self._tasks: list[asyncio.Task] = []

    @classmethod
    def open(cls, data: Path, config: LedgerConfig, database_url: str | None = None) -> LedgerService:
        """The service over `data`/ledger.sqlite (or the PostgreSQL database at `database_url`, which several
        processes share) and `data`/ledger-key.pem with `config`'s backends."""
        key = load_or_create_signing_key(data / SIGNING_KEY_FILE)
        path: Path | str
        if database_url:
            path = "the ledger database (PostgreSQL)"
            with database_errors(path):
                conn = PgConnection(database_url, autocommit=True, name="theatrum-ledger")
        else:
            path = data / LEDGER_DB
            conn = connect(path)
            quick_check(conn, path)
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
        return cls(CheckpointStore(conn), key, backends, path=path,
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
        (rows were cut off the end) or another root at that size (rows were rewritten); CorruptStoreError if the
        stored checkpoint's note no longer verifies under the server's key, or says something else than its row.
        """
        latest = self.store.latest(log.room)
        if latest is not None:
            try:
                noted = parse_and_verify(latest.note, verifier_for(latest.checkpoint.origin, self.key))
            except CheckpointError as error:
                raise CorruptStoreError(f"{self.path}: room {log.room}: the signed note of checkpoint {latest.size} "
                                        f"does not verify ({error})") from error
            if noted != latest.checkpoint:
                raise CorruptStoreError(f"{self.path}: room {log.room}: checkpoint {latest.size}'s row differs from "
                                        "its signed note")
            signed = latest.checkpoint
            if signed.size > log.size:
                raise LogCorruptError(f"room {log.room}: the log holds {log.size} events, but checkpoint "
                                      f"{signed.size} was signed over {signed.size}")
            if log.root(signed.size) != signed.root:
                raise LogCorruptError(f"room {log.room}: the first {signed.size} events do not hash to the "
                                      "root of the checkpoint signed for them")
        self._watch(log)

    def appended(self, log: EventLog) -> StoredCheckpoint | None:
        """After an append: cut if the policy says so. Never raises for a storage problem (logs it)."""
        watch = self._watch(log)
        if self.policy.due(log.size, watch.covered, watch.since, self.clock()):
            return self._cut_safely(log)
        return None

    def unwatch(self, room: str) -> None:
        """Stop following a room this process no longer serves (another process took it over)."""
        self._watched.pop(room, None)

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

        Requires a non-empty log. Raises StorageError if the checkpoint cannot be stored.
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
            cut = self._cut(room_log)
        except StorageFullError:  # cut again by the clock once there is space; said once, not at every tick
            if room_log.room not in self._full:
                self._full.add(room_log.room)
                logger.error("room %s: checkpoints cannot be cut while the disk is full (at size %d); they will "
                             "be when there is space", room_log.room, room_log.size)
            return None
        except (StorageError, CheckpointError, ValueError):
            logger.exception("room %s: the checkpoint at size %d could not be cut", room_log.room, room_log.size)
            return None
        if room_log.room in self._full:
            self._full.discard(room_log.room)
            logger.info("room %s: checkpoint %d cut, the disk has space again", room_log.room, cut.size)
        return cut

    def _cut(self, log: EventLog) -> StoredCheckpoint:
        """Sign the head, store it, queue its anchorings, wake the workers. Requires log.size > 0."""
        now = self.clock()
        checkpoint, note = cut_checkpoint(log, self.origin(log.room), self.key, now)
        if not self.store.add(log.room, checkpoint, note, list(self.backends), now):
            stored = self.store.at(log.room, checkpoint.size)  # another process sharing the database cut it
            if stored is None or stored.checkpoint.root != checkpoint.root:
                raise CorruptStoreError(f"{self.path}: room {log.room}: another process signed another root at "
                                        f"size {checkpoint.size}")
            self._watched[log.room] = _Watch(log, stored.size, stored.checkpoint.time)
            return stored
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

    def close(self) -> None:
        """Close the ledger database. Requires `stop` first."""
        self.store.conn.close()

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
            except StorageError:
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
            except StorageError:
                logger.exception("the checkpoint clock failed; it goes on")

    async def _attempt(self, row: AnchoringRow) -> None:
        """Anchor one checkpoint with one backend; record the receipt or the failure."""
        backend = self.backends[row.backend]
        stored = self.store.at(row.room, row.size)
        if stored is None or not self.store.claim(row, self.clock() + CLAIM_MS):
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

"""The session hub: every live room, the sockets in it, and what each socket message does to it.

One Hub per app keeps every room of the room database in memory as a `LiveRoom`: the `sessions.room.Room`
(state and log), an asyncio.Lock that serialises its ops, its PoseHub, the connected sockets of each
participant, and its subscribers (the sockets that receive its broadcasts). An op goes: rate limit, then
under the room's lock parse and check it (sessions), append it to the log and commit, let the ledger cut a
checkpoint if one is due, and queue the `event` for the subscribers (the sender too); then the ack.

Order without waiting. Nothing under a room's lock awaits: deciding an event and queueing it happen in one
step of the event loop, and `Fanout.send` (server/services/fanout.py) queues synchronously, so every socket
receives a room's messages in the order they were decided and an op's event before its ack.

A socket enters in two steps. `connect` checks the invite and logs the join; a refusal is a refused
connection. Once python-socketio has accepted the connection, `_welcome` (under the room's lock) sends the
snapshot, or for a reconnect with `last_seq` the missed events, and adds the socket to the subscribers: the
history holds every event up to the room's seq, and every later event is sent to the new subscriber.

Poses are not logged: each room's PoseHub keeps the latest pose per participant and a tick (~20 Hz) sends one
batched `poses` frame per room. A closed room can be played back (server/services/playback.py). The socket
handlers that call this class are registered in server/services/sockets.py.

Group commit. An op's event is staged in its room's log; once a turn of the loop `flush` commits every staged
event of every room in one transaction, then sends them in order and acks the ops (nothing is sent or acked
before it is durable).

Several processes (THEATRUM_DATABASE_URL: the room database is PostgreSQL, shared). A proxy sends every socket
of a room to one process (docs/operations.md). The hub loads a room when one of its sockets arrives (`take`: the
stored state and Merkle head, and a grace period for the participants present), reads rooms it does not serve
from the database (`view`), and forgets a room 30 s after its last socket here left. The log's primary key
(log, seq) is the fence: if another process wrote a room first, the commit names it (LogConflictError), this
process forgets the room, refuses the ops it had staged (`unavailable`) and closes its sockets there, logging
no leaves; their clients reconnect to the room's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import socketio

from server.clock import now_ms
from server.config import Settings
from server.metrics import Metrics
from server.services import growing, playback
from server.services.client_errors import ClientErrors
from server.services.deid import Pseudonymizer
from server.services.errors import ServiceError
from server.services.fanout import Fanout
from server.services.growing import GrowRequests
from server.services.invites import (
    ROLE,
    Invite,
    InviteError,
    InviteSigner,
    JoinThrottle,
    RoomNotOpenError,
    invite_link,
    new_room_code,
)
from server.services.ledger import LedgerService
from server.services.provenance import mesh_provenance
from server.storage.errors import StorageError
from server.storage.roomdb import RoomCode, RoomDatabase, RoomRecord
from sessions.events import Event, ServerKind
from sessions.limits import RateLimiter, ViolationCounter, op_rate_limiter
from sessions.log import EventLog, LogConflictError, LogError
from sessions.ops import ErrorCode, OpError, OpKind
from sessions.poses import PoseHub, PoseLimits
from sessions.replay import TrackPoint
from sessions.roles import Role
from sessions.room import Room, RoomInfo, RoomMode
from sessions.state import Participant

log = logging.getLogger("theatrum.hub")

REFUSED = "invalid or expired invite"
REPLACED = "this link was replaced after someone was removed from the room; ask the instructor for the new one"
UNAVAILABLE_JOIN = "the server could not record your arrival; try again"
MOVED = "the room moved to another server process; reconnecting"
MAX_VIEWS = 256  # rooms kept read-only in memory (several processes)
LOST_CLOSE_DELAY_S = 0.2  # a room another process took: its sockets here close this long after
RELEASE_AFTER_S = 30.0  # a room with no socket here for this long is forgotten here (several processes)


def refused(message: str, code: str | None = None) -> socketio.exceptions.ConnectionRefusedError:
    """A refused connection: the client's `connect_error` gets {message, data: {code}}."""
    if code is None:
        return socketio.exceptions.ConnectionRefusedError(message)
    return socketio.exceptions.ConnectionRefusedError(message, {"code": code})


def nack(error: OpError) -> dict[str, Any]:
    """A negative ack."""
    return {"ok": False, "error": error.to_json()}


@dataclass(eq=False)
class Member:
    """One connected socket: its room and participant, its op rate limiter and violation counter."""

    sid: str
    room: str
    participant: str
    limiter: RateLimiter
    violations: ViolationCounter
    last_seq: int | None = None
    replay: playback.Replay | None = None
    task: asyncio.Task | None = None
    live: LiveRoom | None = None  # the room as this socket entered it
    since: float = field(default_factory=time.monotonic)  # when it connected (the newest socket carries the voice)


@dataclass(frozen=True)
class RoomAccess:
    """What an invite may read over HTTP: its room and the room's meshes."""

    room: str
    meshes: frozenset[str]


@dataclass(eq=False)
class Staged:
    """An event staged in the log's open transaction, waiting for the next group commit."""

    live: LiveRoom
    event: Event
    done: asyncio.Future


@dataclass(eq=False)
class LiveRoom:
    """A room in memory: the domain Room, the lock that orders its log, its poses, its sockets by participant,
    the sockets subscribed to its broadcasts, and its budgets: each participant's op rate and violations (shared
    by all their sockets) and the room's events per minute."""

    room: Room
    record: RoomRecord
    poses: PoseHub
    meshes: frozenset[str]
    events: RateLimiter
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sockets: dict[str, set[str]] = field(default_factory=dict)
    subscribers: set[str] = field(default_factory=set)
    rates: dict[str, RateLimiter] = field(default_factory=dict)
    violations: dict[str, ViolationCounter] = field(default_factory=dict)
    # Leaves that could not be logged yet (a full disk): participant -> (time in ms, reason). They are gone
    # in memory at once and logged, in order, as soon as the log takes writes again.
    unlogged_leaves: dict[str, tuple[int, str]] = field(default_factory=dict)
    # Several processes: set when another process appended to the room first (this copy is stale; its sockets
    # are being closed, and their going logs no leave), and when the room last had a socket here.
    lost: bool = False
    idle_since: float = field(default_factory=time.monotonic)

    @property
    def id(self) -> str:
        return self.room.id

    def present(self) -> list[Participant]:
        """The participants in the room now (a leave not yet logged counts as a leave)."""
        return [p for p in self.room.present() if p.id not in self.unlogged_leaves]

    def snapshot_for(self, participant: str) -> dict[str, Any]:
        """The room's snapshot for `participant`, with the presence of unlogged leaves set right."""
        snapshot = self.room.snapshot_for(participant)
        for gone in self.unlogged_leaves:
            if gone in snapshot["participants"]:
                snapshot["participants"][gone]["present"] = False
        return snapshot


class Hub:
    """Every room of the server, and what socket messages do to them."""

    def __init__(self, fanout: Fanout, db: RoomDatabase, invites: InviteSigner, ledger: LedgerService,
                 settings: Settings, metrics: Metrics, pseudonyms: Pseudonymizer):
        """Rebuild every room of `db` from its log."""
        self.fanout = fanout
        self.db = db
        self.invites = invites
        self.ledger = ledger
        self.settings = settings
        self.metrics = metrics
        self.pseudonyms = pseudonyms
        self.join_throttle = JoinThrottle(settings.join_rate, settings.join_failures_per_minute)
        self.client_errors = ClientErrors(log)
        self.limits = settings.room_limits
        self.pose_limits: PoseLimits = settings.pose_limits
        self.code_roles = tuple(Role(r) for r in settings.room_code_roles)
        self.rooms: dict[str, LiveRoom] = {}
        self.members: dict[str, Member] = {}
        self.closing = False
        self._orphans: dict[tuple[str, str], float] = {}  # (room, participant) present at start -> deadline
        self.unverified: dict[str, str] = {}  # room -> why its stored Merkle tree cannot be vouched for
        self._staged: list[Staged] = []  # events waiting for the next group commit, in order
        self._commit: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._ticker: asyncio.Task | None = None
        self.grow: GrowRequests | None = None  # set by the app: structure.grow ops become jobs there
        # Several processes share the database (THEATRUM_DATABASE_URL): rooms are loaded when a socket comes
        # (`take`) or read over HTTP (`view`), not all at start.
        self.shared = bool(settings.database_url)
        self.views: dict[str, LiveRoom] = {}  # rooms read here but served by another process (shared only)
        if not self.shared:
            for record in self.db.records():
                room = Room.open(EventLog(self.db.logs, record.id), self.limits)
                self.rooms[record.id] = self._live(room, record)
        self._count_rooms()

    def _live(self, room: Room, record: RoomRecord) -> LiveRoom:
        room.deferred = True  # events are staged, and committed together once a turn of the loop (`flush`)
        per_minute = self.limits.max_events_per_minute
        grown = {s["mesh"] for s in room.state.structures.values()}
        return LiveRoom(room, record, PoseHub(self.pose_limits), frozenset(room.info.meshes) | grown,
                        RateLimiter(per_minute / 60.0, per_minute))

    def log_of(self, room_id: str) -> EventLog | None:
        """The event log of room `room_id` (every event committed), or None."""
        self.flush()
        live = self.view(room_id)
        return live.room.log if live is not None else None

    # ---- several processes -------------------------------------------------------------------------

    def view(self, room_id: str) -> LiveRoom | None:
        """Room `room_id` as stored now, to read (HTTP), or None. With one process, the room in memory. With
        several, the room served here if it has sockets here, else its latest stored state (loaded again only
        when its log grew): reading a room never takes it over. Raises StorageError / LogError if the database
        cannot be read."""
        live = self.rooms.get(room_id)
        if not self.shared or (live is not None and live.sockets and not live.lost):
            return live
        self.flush()
        stored = self.db.logs.last_seq(room_id)
        if live is not None and not live.lost and live.room.seq == stored:
            return live
        cached = self.views.get(room_id)
        record = self.db.record(room_id)
        if record is None:
            return None
        if cached is not None and cached.room.seq == stored:
            cached.record = record
            return cached
        cached = self.views[room_id] = self._live(Room.open(EventLog(self.db.logs, room_id), self.limits), record)
        while len(self.views) > MAX_VIEWS:
            del self.views[next(iter(self.views))]
        return cached

    def every_room(self) -> list[LiveRoom]:
        """Every room, oldest first (with several processes, as stored now: see `view`)."""
        if not self.shared:
            return list(self.rooms.values())
        return [live for record in self.db.records() if (live := self.view(record.id)) is not None]

    def take(self, room_id: str) -> LiveRoom | None:
        """Room `room_id`, served by this process from now on (a socket of it came here), or None. With several
        processes, a room this process does not hold, or holds older than stored (another process wrote to it),
        is loaded from the database: state and Merkle head as stored, and a grace period for the participants
        present to come back (their clients reconnect here when their process failed). Raises StorageError /
        LogError if the database cannot be read."""
        live = self.rooms.get(room_id)
        if not self.shared:
            return live
        self.flush()
        stored = self.db.logs.last_seq(room_id)
        if live is not None and not live.lost and live.room.seq == stored:
            return live
        if live is not None:
            self._lose(live, "another process wrote to it")
        record = self.db.record(room_id)
        if record is None:
            return None
        room = Room.open(EventLog(self.db.logs, room_id), self.limits)
        live = self.rooms[room_id] = self._live(room, record)
        self.views.pop(room_id, None)
        try:
            self.ledger.watch(room.log)
        except LogError as error:
            self.unverified[room_id] = str(error)
            log.error("room %s: %s; its proofs and exports are refused until it is repaired", room_id, error)
        deadline = time.monotonic() + self.settings.room_rejoin_grace
        for participant in room.present():
            self._orphans[(room_id, participant.id)] = deadline
        self._spawn(self._check_tree(room_id))
        self._count_rooms()
        log.info("room %s: served here from seq %d", room_id, room.seq)
        return live

    def _lose(self, live: LiveRoom, why: str) -> None:
        """Another process serves this room now: forget it here and close its sockets here (their clients
        reconnect through the proxy, to the room's process), logging no leaves."""
        log.warning("room %s: no longer served here (%s); %d socket(s) closed", live.id, why,
                    sum(len(s) for s in live.sockets.values()))
        live.lost = True
        if self.rooms.get(live.id) is live:
            del self.rooms[live.id]
        self.ledger.unwatch(live.id)
        for key in [k for k in self._orphans if k[0] == live.id]:
            del self._orphans[key]
        sids = [sid for sids in live.sockets.values() for sid in sids]
        self._spawn(self._close_later(sids))  # after the refused ops' acks have gone out
        self._count_rooms()

    async def _close_later(self, sids: list[str]) -> None:
        await asyncio.sleep(LOST_CLOSE_DELAY_S)
        for sid in sids:
            await self.fanout.disconnect(sid)

    def _release_idle(self, now: float) -> None:
        """Forget rooms that have had no socket here for RELEASE_AFTER_S seconds and owe nothing (no grace
        period running, no leave waiting for space): their next socket may reach another process."""
        waiting = {room for room, _ in self._orphans}
        for live in list(self.rooms.values()):
            if live.sockets or live.subscribers:
                live.idle_since = now
            elif now - live.idle_since >= RELEASE_AFTER_S and live.id not in waiting and not live.unlogged_leaves:
                self.ledger.closed(live.room.log)  # cut what is uncovered, and stop following it
                del self.rooms[live.id]
        self._count_rooms()

    async def _check_tree(self, room_id: str) -> None:
        """Check one room's stored Merkle nodes against its events (see check_trees)."""
        for mismatch in self.db.logs.nodes_mismatch(room_id):
            if mismatch is None:
                await asyncio.sleep(0)
                continue
            reason = (f"{self.db.path}: room {room_id}: the stored Merkle nodes of seq {mismatch} do not hash "
                      "from its events")
            self.unverified[room_id] = reason
            log.error("%s; the room's proofs and exports are refused until it is repaired", reason)

    # ---- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Let the ledger follow every room, start the pose tick, and give participants present at the last
        stop a grace period to return. Raises LogCorruptError if a log no longer matches its checkpoints."""
        for live in self.rooms.values():
            self.ledger.watch(live.room.log)
        deadline = time.monotonic() + self.settings.room_rejoin_grace
        for live in self.rooms.values():
            for participant in live.room.present():
                self._orphans[(live.id, participant.id)] = deadline
        if self.settings.pose_tick_hz > 0:
            self._ticker = asyncio.create_task(self._tick_loop(1.0 / self.settings.pose_tick_hz))
        self._spawn(self.check_trees())

    async def check_trees(self) -> None:
        """Check every room's stored Merkle nodes against its events, a page at a time between other work. A
        room whose nodes do not hash from its events is noted in `unverified` (its proofs are refused)."""
        for live in list(self.rooms.values()):
            await self._check_tree(live.id)

    async def shutdown(self) -> None:
        """The server is stopping: log no leaves from now on (clients will come back), and close every
        connection so that the web server stops at once (clients reconnect to the next server)."""
        self.closing = True
        await self.fanout.close_all()

    async def stop(self) -> None:
        """Stop the tick and every replay, and close the database."""
        self.closing = True
        tasks = [t for t in (self._ticker, *self._tasks, *(m.task for m in self.members.values())) if t]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self.db.close()

    # ---- rooms -------------------------------------------------------------------------------------

    def create_room(self, mode: RoomMode, title: str, study: str, meshes: list[str],
                    names: Mapping[Role, str], provenance: Mapping[str, Any],
                    structures: tuple[Mapping[str, Any], ...] = ()) -> LiveRoom:
        """Create a room (room.open logged, then the meshes' mesh.provenance), its role invites, and codes in a
        training room. Requires a checked study and meshes, their provenance (server/services/provenance.py) and
        the structures of their segmentations.

        Raises OpError (invalid) for a bad title or id.
        """
        room_id = "rm" + secrets.token_hex(8)
        info = RoomInfo(room_id, mode, title, study, tuple(meshes), structures)
        at, now = now_ms(), time.time()
        record = RoomRecord(room_id, at, int(now) + self.settings.invite_ttl,
                            {role.value: names[role] for role in Role})
        self.flush()  # the room's row, codes and room.open commit together, and alone
        try:
            self.db.stage_room(record)
            for role in self.code_roles if mode is RoomMode.TRAINING else ():
                code = new_room_code(lambda c: self.db.code_taken(c, now))
                self.db.stage_code(RoomCode(code, room_id, role, record.invite_exp))
            room = Room.create(info, EventLog(self.db.logs, room_id), at, self.limits)
            room.record_provenance(provenance, at)
        except BaseException:
            self.db.rollback()
            raise
        live = self.rooms[room_id] = self._live(room, record)
        self.ledger.watch(room.log)
        self._count_rooms()
        if self.shared:
            log.info("room %s: opened, served here", room_id)
        return live

    async def record_provenance(self, live: LiveRoom, provenance: Mapping[str, Any]) -> Event:
        """Log and send the mesh.provenance of meshes added to an open room after it opened. Raises OpError
        (forbidden) for a closed room, LogError if it cannot be logged."""
        async with live.lock:
            committed = self._stage(live, live.room.record_provenance(provenance, now_ms()))
        return await committed

    async def close_room(self, live: LiveRoom) -> Event:
        """Log room.close, send it, and disconnect everyone. Raises OpError (forbidden) if already closed."""
        async with live.lock:
            committed = self._stage(live, live.room.close(now_ms()))
        event = await committed  # everyone has the close queued before their socket goes
        self.ledger.closed(live.room.log)
        self.flush()  # nothing staged may commit with (or roll back with) the codes' delete
        self.db.delete_codes(live.id)
        self._count_rooms()
        live.poses = PoseHub(self.pose_limits)
        for sids in list(live.sockets.values()):
            for sid in list(sids):
                await self.fanout.disconnect(sid)
        return event

    def role_invite(self, live: LiveRoom, role: Role) -> tuple[str, int]:
        """The room's invite for `role` of the current generation (the same token every time): (token, exp)."""
        exp = live.record.invite_exp
        nonce = self.invites.role_nonce(live.id, role, live.record.generation(role))
        token = self.invites.issue(live.id, role, live.record.names[role.value], exp, nonce, kind=ROLE)
        return token, exp

    def _replaced(self, live: LiveRoom, invite: Invite) -> bool:
        """Whether `invite` is a role link of an earlier generation (replaced after a kick)."""
        generation = self.invites.role_generation(invite)
        return generation is not None and generation != live.record.generation(invite.role)

    def exchange(self, token: str, name: str) -> tuple[LiveRoom, Role, str, int]:
        """A personal invite for whoever opened a role link: (room, role, token, exp). Raises InviteError."""
        invite = self.invites.verify(token)
        live = self.view(invite.room)
        if live is None or self.invites.role_generation(invite) is None:
            raise InviteError("not a room's role link")
        if self._replaced(live, invite):
            raise InviteError(REPLACED)
        self._check_open_to_newcomers(live)
        token, exp = self.issue_invite(live, invite.role, name, min(invite.exp - int(time.time()), 10**9))
        return live, invite.role, token, exp

    def _check_open_to_newcomers(self, live: LiveRoom) -> None:
        """Raise InviteError if the room cannot take a new participant now."""
        if live.room.closed:
            raise RoomNotOpenError("the room is closed")
        if live.room.state.joins_locked:
            raise RoomNotOpenError("the instructor has locked the room against new joins")

    async def _replace_role_link(self, live: LiveRoom, participant: str) -> None:
        """After a kick: the kicked participant's role gets a new link (and room code, if it has one), and the
        instructors present are sent the new ones."""
        kicked = live.room.participant(participant)
        if kicked is None:
            return
        role, now = kicked.role, time.time()
        old = self.db.codes_of(live.id).get(role)
        code = None
        if old is not None:
            code = RoomCode(new_room_code(lambda c: self.db.code_taken(c, now)), live.id, role, old.exp)
        self.flush()
        try:
            live.record = self.db.next_generation(live.record, role, code)
        except StorageError:
            log.exception("room %s: the %s link could not be replaced after a kick", live.id, role.value)
            return
        token, exp = self.role_invite(live, role)
        message = {"role": role.value, "link": invite_link(self.settings.base_url, token),
                   "code": code.code if code is not None else None, "expires_at": exp}
        instructors = [sid for p, sids in live.sockets.items() for sid in sids
                       if (who := live.room.participant(p)) is not None and who.role is Role.INSTRUCTOR]
        self.fanout.send("invites", message, instructors)

    def issue_invite(self, live: LiveRoom, role: Role, name: str, ttl: int | None = None) -> tuple[str, int]:
        """A new personal invite (a new participant): (token, exp). Raises InviteError for a bad name."""
        exp = int(time.time()) + (ttl or self.settings.invite_ttl)
        return self.invites.issue(live.id, role, name, exp), exp

    def redeem_code(self, code: str, name: str) -> tuple[LiveRoom, Role, str, int]:
        """A personal invite for whoever typed a room code: (room, role, token, exp). Raises InviteError."""
        row = self.db.code(code)
        live = self.view(row.room) if row is not None else None
        if row is None or live is None or row.exp <= time.time() or live.room.closed:
            raise InviteError("unknown or expired room code")
        self._check_open_to_newcomers(live)
        token, exp = self.issue_invite(live, row.role, name)
        return live, row.role, token, exp

    def pseudonym_of(self, invite: Invite) -> str:
        """The participant's pseudonym: a keyed hash of the invite's room and nonce."""
        return self.pseudonyms.participant(f"{invite.room}:{invite.nonce}")

    def access(self, token: str) -> RoomAccess | None:
        """What a valid invite may read over HTTP, or None (bad or expired token, unknown room, kicked)."""
        try:
            invite = self.invites.verify(token)
        except InviteError:
            return None
        try:
            live = self.view(invite.room)
        except (StorageError, LogError):
            log.exception("room %s could not be read", invite.room)
            return None
        if live is None or self._replaced(live, invite):
            return None
        participant = live.room.participant(self.pseudonym_of(invite))
        if participant is not None and participant.kicked:
            return None
        return RoomAccess(live.id, live.meshes)

    def _count_rooms(self) -> None:
        self.metrics.rooms.set(sum(1 for live in self.rooms.values() if not live.room.closed))

    # ---- connect and disconnect --------------------------------------------------------------------

    async def connect(self, sid: str, auth: Any) -> None:
        """Admit socket `sid` with auth {token, last_seq?, replay?}. Raises ConnectionRefusedError."""
        if not isinstance(auth, Mapping):
            raise refused(REFUSED)
        try:
            invite = self.invites.verify(auth.get("token"))
        except InviteError:
            raise refused(REFUSED) from None
        try:
            live = self.take(invite.room)
        except (StorageError, LogError):
            log.exception("room %s could not be loaded", invite.room)
            raise refused(UNAVAILABLE_JOIN, "unavailable") from None
        if live is None:
            raise refused(REFUSED)
        if self._replaced(live, invite):
            raise refused(REPLACED, ErrorCode.FORBIDDEN.value)
        last_seq = auth.get("last_seq")
        if last_seq is not None and (isinstance(last_seq, bool) or not isinstance(last_seq, int)):
            raise refused("last_seq must be an integer", ErrorCode.INVALID.value)
        participant = self.pseudonym_of(invite)
        member = Member(sid, live.id, participant,
                        live.rates.setdefault(participant, op_rate_limiter(self.limits)),
                        live.violations.setdefault(participant, ViolationCounter.for_room(self.limits)), last_seq,
                        live=live)
        if auth.get("replay") is not None:
            try:
                member.replay = playback.replay_request(live.room, participant, auth["replay"])
            except OpError as error:
                raise refused(error.detail, error.code.value) from None
        else:
            async with live.lock:
                sockets = live.sockets.setdefault(participant, set())
                if len(sockets) >= self.limits.max_sockets_per_participant:
                    raise refused(f"you are already connected {len(sockets)} times (the limit)",
                                  ErrorCode.LIMIT.value)
                try:
                    known = live.room.participant(participant)
                    if (known is None or not known.present) and not live.events.allow(time.monotonic()):
                        raise self._room_busy()
                    event = live.room.join(participant, invite.name, invite.role, now_ms())
                    committed = self._stage(live, event) if event is not None else None
                except OpError as error:
                    raise refused(error.detail, error.code.value) from None
                except LogError:
                    raise refused(UNAVAILABLE_JOIN, "unavailable") from None
                sockets.add(sid)
            if committed is not None:
                try:
                    await committed
                except LogError:
                    live.sockets.get(participant, set()).discard(sid)
                    raise refused(UNAVAILABLE_JOIN, "unavailable") from None
        self.members[sid] = member
        member.task = self._spawn(self._welcome(member))

    async def disconnect(self, sid: str, reason: str | None = None) -> None:
        """Forget socket `sid`; when a participant's last socket goes, drop their avatar and log the leave."""
        member = self.members.pop(sid, None)
        if member is None:
            return
        if member.task is not None and member.task is not asyncio.current_task():
            member.task.cancel()
        live = member.live
        if live is None or member.replay is not None:
            return
        live.subscribers.discard(sid)
        sids = live.sockets.get(member.participant, set())
        sids.discard(sid)
        if sids:
            return
        live.sockets.pop(member.participant, None)
        live.poses.remove(member.participant)
        if self.closing or live.lost:
            return
        await self._leave(live, member.participant, _leave_reason(reason))

    async def _leave(self, live: LiveRoom, participant: str, reason: str) -> None:
        """Log the participant's leave unless they came back meanwhile. Requires a participant with no
        sockets when called."""
        async with live.lock:
            if live.sockets.get(participant) or self.closing or live.lost:
                return
            at = now_ms()
            if live.unlogged_leaves:
                live.unlogged_leaves[participant] = (at, reason)  # after the earlier ones, in order
                return
            try:
                event = live.room.leave(participant, at, reason)
                committed = self._stage(live, event) if event is not None else None
            except LogError as error:
                committed, failure = None, error
            else:
                failure = None
        try:
            if committed is not None:
                await committed
        except LogError as error:
            failure = error
        if failure is not None:
            log.error("room %s: a leave could not be logged (%s); it will be when the log takes writes again",
                      live.id, failure)
            live.unlogged_leaves[participant] = (at, reason)

    async def _log_unlogged_leaves(self, live: LiveRoom) -> None:
        """Log the leaves a full disk held back, in order, while the log takes them."""
        async with live.lock:
            while live.unlogged_leaves:
                participant, (at, reason) = next(iter(live.unlogged_leaves.items()))
                if live.sockets.get(participant):  # came back meanwhile: they never left, for the log
                    del live.unlogged_leaves[participant]
                    continue
                try:
                    event = live.room.leave(participant, at, reason)
                    if event is not None:
                        await self._stage(live, event)
                except LogError:
                    return
                del live.unlogged_leaves[participant]

    async def _welcome(self, member: Member) -> None:
        """Once the connection is accepted: the history (snapshot or missed events), subscribe, avatars."""
        if not await self._accepted(member.sid):
            await self.disconnect(member.sid, "never accepted")
            return
        live = member.live
        if member.replay is not None:
            await playback.play(live.room, member.participant, member.sid, member.replay, self.fanout,
                                lambda since: self.db.track(live.id, since=since))
            return
        async with live.lock:
            if self.members.get(member.sid) is not member:
                return
            self.flush()  # the history is what is durable
            self._send_history(live, member, member.last_seq)
            live.subscribers.add(member.sid)
            self.fanout.send("poses", {"poses": live.poses.latest(), "gone": []}, member.sid)

    async def _accepted(self, sid: str) -> bool:
        """Wait until python-socketio has sent CONNECT for `sid` (right after the connect handler)."""
        for attempt in range(2000):
            if self.fanout.is_connected(sid):
                return True
            if sid not in self.members:
                return False
            await asyncio.sleep(0 if attempt < 20 else 0.005)
        return False

    def _send_history(self, live: LiveRoom, member: Member, last_seq: int | None) -> bool:
        """Send the events after `last_seq`, or a snapshot; True for a snapshot. Requires the room's lock."""
        events = None if last_seq is None else live.room.catch_up(last_seq)
        if events is None:
            self.fanout.send("snapshot", live.snapshot_for(member.participant), member.sid)
            return True
        for event in events:
            self.fanout.send("event", event.to_wire(), member.sid)
        return False

    # ---- messages ----------------------------------------------------------------------------------

    async def on_op(self, sid: str, message: Any = None) -> dict[str, Any]:
        """Handle `op`: ack {ok: true, seq} once the event is committed and sent, or {ok: false, error}."""
        member = self.members.get(sid)
        if member is None:
            return nack(OpError(ErrorCode.FORBIDDEN, "this connection is not in a room"))
        if member.replay is not None:
            return nack(OpError(ErrorCode.FORBIDDEN, "a replay is read-only"))
        live = member.live
        if live.lost:
            return {"ok": False, "error": {"code": "unavailable", "detail": MOVED}}
        try:
            if not member.limiter.allow(time.monotonic()):
                raise OpError(ErrorCode.LIMIT, f"too many ops: at most {self.limits.op_rate:g} per second "
                                               f"(bursts of {self.limits.op_burst:g})")
            if not live.events.allow(time.monotonic()):
                raise self._room_busy()
            async with live.lock:
                committed = self._stage(live, live.room.apply(message, member.participant, now_ms()))
            event = await committed  # sent to the room (the kicked see their kick before their socket goes)
        except OpError as error:
            self._violation(member, error)
            return nack(error)
        except LogError:
            return {"ok": False, "error": {"code": "unavailable",
                                           "detail": "the server could not record the op"}}
        if event.kind == OpKind.PARTICIPANT_KICK:
            await self._replace_role_link(live, event.data["participant"])
            await self._remove(live, event.data["participant"])
        if event.kind == OpKind.STRUCTURE_GROW:
            why = self.grow.submit(live.room.info, event) if self.grow is not None else "growing is not available"
            if why is not None:
                await self._record(live, ServerKind.STRUCTURE_FAIL, {"request": event.data["request"], "reason": why})
        return {"ok": True, "seq": event.seq}

    async def grow_changed(self, job: Mapping[str, Any]) -> None:
        """A grow job moved on: its progress goes to the room's sockets (not logged); its end is logged as
        structure.add (the new mesh, readable by the room's invites from now on) or structure.fail."""
        params = job["params"]
        live = self.rooms.get(params["room"])
        if live is None or live.room.closed or params["request"] not in live.room.state.growing:
            return
        request = params["request"]
        if job["state"] in ("queued", "running"):
            progress = {"request": request, "stage": job["stage"], "percent": job["percent"]}
            self.fanout.send("structure.progress", progress, live.subscribers)
            return
        data = growing.outcome(self.grow.catalog, job) if job["state"] == "done" and self.grow else None
        if data is None:
            reason = job.get("error") or ("cancelled" if job["state"] == "cancelled" else "no structure was made")
            if reason.startswith("seed: ") or reason.startswith("band: "):
                reason = reason.split(": ", 1)[1]
            elif reason.startswith("internal error"):
                reason = "the server could not grow this structure"
            await self._record(live, ServerKind.STRUCTURE_FAIL, {"request": request, "reason": reason})
            return
        live.meshes = live.meshes | {data["mesh"]}
        try:
            await self.record_provenance(live, mesh_provenance(self.grow.catalog, [data["mesh"]]))
        except (OpError, LogError, ServiceError):
            log.exception("room %s: the provenance of a grown structure could not be logged", live.id)
        await self._record(live, ServerKind.STRUCTURE_ADD, data)

    async def _record(self, live: LiveRoom, kind: ServerKind, data: Mapping[str, Any]) -> None:
        """Log and send a server event of the room's structures."""
        async with live.lock:
            if live.room.closed:
                return
            committed = self._stage(live, live.room.record(kind, data, now_ms()))
        try:
            await committed
        except LogError:
            log.exception("room %s: %s could not be logged", live.id, kind)

    def on_pose(self, sid: str, message: Any = None) -> None:
        """Handle `pose` (volatile, no ack): keep it for the next tick; a malformed pose is a violation."""
        member = self.members.get(sid)
        if member is None or member.replay is not None:
            return
        live = member.live
        participant = live.room.participant(member.participant)
        if participant is None or not participant.present:
            return
        try:
            live.poses.receive(member.participant, message, time.monotonic())
        except OpError as error:
            self._violation(member, error)

    async def on_resume(self, sid: str, message: Any = None) -> dict[str, Any]:
        """Handle `resume {last_seq}`: send the missed events (or a snapshot); ack {ok, seq, snapshot}."""
        member = self.members.get(sid)
        if member is None or member.replay is not None:
            return nack(OpError(ErrorCode.FORBIDDEN, "this connection is not in a live room"))
        last_seq = message.get("last_seq") if isinstance(message, Mapping) else None
        if isinstance(last_seq, bool) or not isinstance(last_seq, int):
            error = OpError(ErrorCode.INVALID, "resume needs {last_seq: integer}")
            self._violation(member, error)
            return nack(error)
        if not member.limiter.allow(time.monotonic()):  # a resume costs an op: it can send 1,000 events
            error = OpError(ErrorCode.LIMIT, "too many requests: resume counts as an op")
            self._violation(member, error)
            return nack(error)
        live = member.live
        if live.lost:
            return {"ok": False, "error": {"code": "unavailable", "detail": MOVED}}
        async with live.lock:
            self.flush()
            snapshot = self._send_history(live, member, last_seq)  # queued before the ack
            seq = live.room.seq
        return {"ok": True, "seq": seq, "snapshot": snapshot}

    def malformed(self, sid: str) -> None:
        """A member's socket sent something socket.io could not decode (it is being dropped): a violation."""
        member = self.members.get(sid)
        if member is not None:
            self._violation(member, OpError(ErrorCode.INVALID, "a malformed message"))

    def _room_busy(self) -> OpError:
        return OpError(ErrorCode.LIMIT, f"the room is at its limit of {self.limits.max_events_per_minute} "
                                        "events a minute; try again in a moment")

    def _violation(self, member: Member, error: OpError) -> None:
        """Count a refused message; too many in the window and the socket is disconnected (after its ack).

        Races that honest clients hit in a busy room (stale_version, not_found) are not violations.
        """
        if error.code in (ErrorCode.STALE_VERSION, ErrorCode.NOT_FOUND):
            return
        self.metrics.violations.inc()
        if member.violations.record(time.monotonic()):
            self.client_errors.record(member.participant, f"room {member.room}: disconnected after repeated "
                                                          f"violations ({error.detail})")
            live = member.live
            sids = (live.sockets.get(member.participant) if live is not None else None) or {member.sid}
            for sid in list(sids):
                self._spawn(self._drop(sid))

    async def _drop(self, sid: str) -> None:
        await asyncio.sleep(0)  # let the ack go out first
        await self.fanout.disconnect(sid)

    async def _remove(self, live: LiveRoom, participant: str) -> None:
        """Disconnect every socket of `participant` (kicked) and drop their avatar."""
        live.poses.remove(participant)
        for sid in list(live.sockets.get(participant, ())):
            await self.fanout.disconnect(sid)

    def _stage(self, live: LiveRoom, event: Event) -> asyncio.Future:
        """Wait for the group commit of `event` (staged in its room's log): the future gives the event once it
        is durable and sent to the room, or raises LogError if the commit failed. Requires the room's lock (keeps
        seq order)."""
        done = asyncio.get_running_loop().create_future()
        self._staged.append(Staged(live, event, done))
        if self._commit is None:
            self._commit = asyncio.get_running_loop().call_soon(self.flush)
        return done

    def flush(self) -> None:
        """The group commit: every event staged since the last one (the ops of every socket read in this turn
        of the loop, in every room) in one transaction. Then, in order, a checkpoint where one is due, each
        event to its room, and each waiting op's ack. If the commit fails, every staged event is dropped, each
        room concerned is reopened from its log, and the waiting ops get LogError.

        Called once a turn of the loop after an event is staged, and before anything reads a log or builds a
        snapshot (so that no one sees an event that is not durable)."""
        if self._commit is not None:
            self._commit.cancel()
            self._commit = None
        staged, self._staged = self._staged, []
        if not staged:
            return
        try:
            self.db.logs.commit()
        except LogConflictError as error:  # another process wrote these rooms first: the others are committed
            lost = [s for s in staged if s.live.id in error.rooms]
            staged = [s for s in staged if s.live.id not in error.rooms]
            for live in dict.fromkeys(s.live for s in lost):
                self._lose(live, "another process appended to it first")
            for s in lost:
                if not s.done.done():
                    s.done.set_exception(error)
        except LogError as error:
            self.db.logs.rollback()
            log.error("%d event(s) could not be committed: %s", len(staged), error)
            for live in dict.fromkeys(s.live for s in staged):
                self._reopen(live)
            for s in staged:
                if not s.done.done():
                    s.done.set_exception(error)
            return
        for live in dict.fromkeys(s.live for s in staged):
            if not live.room.closed:
                self.ledger.appended(live.room.log)
        for s in staged:
            self._broadcast(s.live, s.event)
            if not s.done.done():
                s.done.set_result(s.event)

    def _reopen(self, live: LiveRoom) -> None:
        """Rebuild a room from its durable log (its staged events were dropped). If even that fails (the
        database is gone), a room several processes share is forgotten here; the next socket loads it again."""
        try:
            room = Room.open(EventLog(self.db.logs, live.id), self.limits)
        except LogError:
            if not self.shared:
                raise
            self._lose(live, "its log could not be read again")
            return
        room.deferred = True
        live.room = room

    def _broadcast(self, live: LiveRoom, event: Event) -> None:
        """Send `event` to the room's subscribers. Requires the room's lock (keeps seq order)."""
        self.fanout.send("event", event.to_wire(), live.subscribers)

    # ---- poses and the tick ------------------------------------------------------------------------

    async def tick(self, now: float | None = None) -> int:
        """One tick: each room's batched `poses` frame, expired avatars, overdue leaves. Returns frames sent.

        Requires `now` (time.monotonic()) not to go backwards between calls.
        """
        now = time.monotonic() if now is None else now
        self.flush()  # the avatar track commits on the same connection
        sent = 0
        for live in list(self.rooms.values()):
            if live.room.closed:
                continue
            frame = live.poses.tick(now)
            self._record_track(live, now)
            if frame is not None and live.subscribers:
                self.fanout.send("poses", frame, live.subscribers)
                sent += 1
        for live in list(self.rooms.values()):
            if live.unlogged_leaves:
                await self._log_unlogged_leaves(live)
        for key, deadline in list(self._orphans.items()):
            if now >= deadline:
                del self._orphans[key]
                live = self.rooms.get(key[0])
                if live is not None and not live.sockets.get(key[1]):
                    await self._leave(live, key[1], "timeout")
        if self.shared:
            self._release_idle(now)
        return sent

    def _record_track(self, live: LiveRoom, now: float) -> None:
        """Keep the room's new ~2 Hz track samples for replays, stamped in server time (ms). Requires `now`
        on the clock the PoseHub was given (time.monotonic())."""
        samples = live.poses.drain_track()
        if not samples:
            return
        wall = now_ms()
        points = [TrackPoint(wall - round((now - s.time) * 1000), s.participant, s.pose.to_json()) for s in samples]
        try:
            self.db.add_track(live.id, points)
        except StorageError:
            log.exception("room %s: the avatar track could not be recorded", live.id)  # a replay loses a moment

    async def _tick_loop(self, period: float) -> None:
        next_at = time.monotonic()
        while True:
            next_at += period
            try:
                await self.tick()
            except Exception:
                log.exception("the pose tick failed")
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at, delay = time.monotonic(), 0.0
            await asyncio.sleep(delay)

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a hub task failed: %r", task.exception())


def _leave_reason(reason: str | None) -> str:
    """The participant.leave reason for a socket.io disconnect reason (a closed tab is a transport close)."""
    reasons = {"client disconnect": "left", "transport close": "left", "ping timeout": "timeout"}
    return reasons.get(reason or "", "disconnected")

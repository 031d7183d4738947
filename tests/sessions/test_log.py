"""EventLog: durable order, the Merkle head, restart from SQLite, tamper detection, wire form, replay."""

from __future__ import annotations

import sqlite3

import pytest
from rooms import ROOM, Clock, fill, new_room, point, rfc6962_root, sqlite_store

from sessions.events import Event, EventError
from sessions.ledger.merkle import leaf_hash, verify_consistency, verify_inclusion
from sessions.log import EventLog, LogCorruptError, LogError, MemoryLogStore
from sessions.ops import OpError
from sessions.replay import TrackPoint, schedule, state_at
from sessions.roles import Role
from sessions.room import Room, RoomInfo, RoomMode
from sessions.sqlite_log import SqliteLogStore

PEOPLE = {"ines": Role.INSTRUCTOR, "sam": Role.SURGEON, "stu": Role.STUDENT}




def test_head_is_the_rfc6962_root_of_the_leaf_bytes():
    clock = Clock()
    room = new_room(PEOPLE, clock=clock)
    fill(room, clock, 20)
    events = room.events_since(0)
    assert [e.seq for e in events] == list(range(1, room.seq + 1))
    assert room.head == rfc6962_root([e.leaf() for e in events]).hex()
    assert all(e.hash == leaf_hash(e.leaf()).hex() for e in events)


def test_restart_from_sqlite_restores_identical_state_and_head(tmp_path):
    clock = Clock()
    store = sqlite_store(tmp_path)
    room = new_room(PEOPLE, store=store, clock=clock)
    fill(room, clock, 30)
    room.apply({"kind": "participant.mute", "participant": "stu", "muted": True}, "ines", clock())
    room.apply({"kind": "room.lock"}, "ines", clock())
    before = (room.state.snapshot(), room.head, room.seq, [e.hash for e in room.events_since(0)])
    store.close()

    store = sqlite_store(tmp_path)  # a new process would do exactly this
    assert store.rooms() == [ROOM]
    reopened = Room.open(EventLog(store, ROOM))
    assert (reopened.state.snapshot(), reopened.head, reopened.seq,
            [e.hash for e in reopened.events_since(0)]) == before
    # It carries on where it stopped, with the same rules (stu is still muted, the model still locked).
    with pytest.raises(OpError):
        reopened.apply(point(), "stu", clock())
    event = reopened.apply(point(), "sam", clock())
    assert event.seq == before[2] + 1
    store.close()


def test_sqlite_and_memory_stores_agree(tmp_path):
    heads = []
    for store in (MemoryLogStore(), sqlite_store(tmp_path)):
        clock = Clock()
        room = new_room(PEOPLE, store=store, clock=clock)
        fill(room, clock, 15)
        heads.append((room.head, room.state.snapshot()))
    assert heads[0] == heads[1]


def test_proofs_from_the_room_log_verify(tmp_path):
    clock = Clock()
    room = new_room(PEOPLE, store=sqlite_store(tmp_path), clock=clock)
    fill(room, clock, 10)
    log, size = room.log, room.seq
    root = bytes.fromhex(room.head)
    for event in room.events_since(0):
        proof = log.inclusion_proof(event.seq, size)
        assert log.leaf_hash(event.seq).hex() == event.hash
        verify_inclusion(bytes.fromhex(event.hash), event.seq - 1, size, proof, root)
    verify_consistency(5, size, log.consistency_proof(5, size), log.root(5), root)


def test_rooms_share_a_database_without_mixing(tmp_path):
    store = sqlite_store(tmp_path)
    one = new_room(PEOPLE, store=store)
    other_log = EventLog(store, "room-2")
    two = Room.create(RoomInfo("room-2", RoomMode.CONSULT), other_log, 1)
    two.join("sam", "Sam", Role.SURGEON, 2)
    one.apply(point(), "sam", 3)
    assert store.rooms() == [ROOM, "room-2"]
    assert (one.seq, two.seq) == (5, 2)
    assert Room.open(EventLog(store, "room-2")).head == two.head != one.head
    with pytest.raises(LogError):
        Room.create(RoomInfo(ROOM, RoomMode.CONSULT), EventLog(store, ROOM), 4)  # not empty


def test_appends_out_of_order_or_to_another_room_are_refused():
    log = EventLog(MemoryLogStore(), ROOM)
    first = Event.create(ROOM, 1, 0, "server", "room.open", {})
    with pytest.raises(LogError):
        log.append(Event.create(ROOM, 2, 0, "server", "room.close", {}))
    with pytest.raises(LogError):
        log.append(Event.create("elsewhere", 1, 0, "server", "room.open", {}))
    log.append(first)
    with pytest.raises(LogError):
        log.append(first)
    assert log.size == 1


class _FailingCommit(SqliteLogStore):
    """A store whose next commit fails, as a full disk would."""

    fail = False

    def commit(self) -> None:
        if self.fail:
            self.fail = False
            raise sqlite3.OperationalError("database or disk is full")
        super().commit()


def test_a_failed_commit_leaves_no_trace_and_the_log_carries_on(tmp_path):
    store = _FailingCommit(tmp_path / "rooms.sqlite", synchronous="NORMAL")
    room = new_room(PEOPLE, store=store)
    seq, head, snapshot = room.seq, room.head, room.state.snapshot()
    store.fail = True
    with pytest.raises(sqlite3.OperationalError):
        room.apply(point(), "sam", 5)
    assert (room.seq, room.head, room.state.snapshot()) == (seq, head, snapshot)
    assert room.log.size == store.last_seq(ROOM) == seq
    event = room.apply(point(), "sam", 6)
    assert event.seq == seq + 1
    assert Room.open(EventLog(store, ROOM)).head == room.head


@pytest.mark.parametrize("tamper", [
    # Row ids are :base + seq (the room's log number << 40).
    "UPDATE events SET leaf = CAST(replace(leaf, 'p3', 'p4') AS BLOB) WHERE id = :base + 10",
    "UPDATE events SET leaf = replace(leaf, 'p3', 'p4') WHERE id = :base + 10",  # becomes TEXT
    "DELETE FROM events WHERE id = :base + 7",
    "UPDATE events SET id = id + 100 WHERE id = (SELECT MAX(id) FROM events)",
    # Row :top (a power of two) completes the largest perfect subtree; its nodes column holds that root last.
    "UPDATE events SET nodes = substr(nodes, 1, :kept) || zeroblob(32) WHERE id = :base + :top",
    "UPDATE events SET nodes = substr(nodes, 1, :kept) WHERE id = :base + :top",
    "UPDATE events SET nodes = x'' WHERE id = (SELECT MAX(id) FROM events)",
])
def test_an_altered_database_is_detected_on_reopen(tmp_path, tamper):
    clock = Clock()
    store = sqlite_store(tmp_path)
    room = new_room(PEOPLE, store=store, clock=clock)
    fill(room, clock, 10)
    # The root of the largest perfect subtree is a stored node that the current root is built from.
    top = 1 << (room.seq.bit_length() - 1)
    assert top < room.seq
    store.conn.execute(tamper, {"top": top, "kept": 32 * (top.bit_length() - 1), "base": store.row_id(ROOM, 0)})
    store.conn.commit()
    with pytest.raises(LogCorruptError):
        Room.open(EventLog(store, ROOM))


def _old_layout(path, room: Room) -> None:
    """Write `room`'s events into a database of the earlier layout: rows without node columns, and the
    Merkle nodes in table merkle_nodes (sessions.ledger_store.SqliteNodeStore, log "room:<id>")."""
    from sessions.ledger.legacy_store import SqliteNodeStore
    from sessions.ledger.sqlite import connect
    from sessions.ledger.tree import MerkleLog

    conn = connect(path)
    conn.execute("CREATE TABLE room_events (room TEXT NOT NULL, seq INTEGER NOT NULL, leaf BLOB NOT NULL,"
                 " PRIMARY KEY (room, seq)) WITHOUT ROWID")
    merkle = MerkleLog(SqliteNodeStore(conn, f"room:{room.id}"))
    for event in room.events_since(0):
        conn.execute("INSERT INTO room_events VALUES (?, ?, ?)", (room.id, event.seq, event.leaf()))
        merkle.append(leaf_hash(event.leaf()))
    conn.commit()
    conn.close()


def test_a_database_of_the_earlier_layout_is_moved_to_node_columns_with_the_same_head(tmp_path):
    clock = Clock()
    room = new_room(PEOPLE, clock=clock)
    fill(room, clock, 25)
    _old_layout(tmp_path / "rooms.sqlite", room)
    store = sqlite_store(tmp_path)
    tables = {name for (name,) in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"event_logs", "events"}
    reopened = Room.open(EventLog(store, ROOM))
    assert (reopened.head, reopened.state.snapshot()) == (room.head, room.state.snapshot())
    assert reopened.log.inclusion_proof(4, 17) == room.log.inclusion_proof(4, 17)
    reopened.apply(point(label="after"), "sam", clock())
    room.apply(point(label="after"), "sam", reopened.events_since(reopened.seq - 1)[0].at)
    assert reopened.head == room.head


def test_an_earlier_layout_whose_rows_were_altered_is_refused_and_left_as_it_was(tmp_path):
    clock = Clock()
    room = new_room(PEOPLE, clock=clock)
    fill(room, clock, 12)
    path = tmp_path / "rooms.sqlite"
    _old_layout(path, room)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE room_events SET leaf = CAST(replace(leaf, 'p3', 'p4') AS BLOB) WHERE seq = 10")
    conn.commit()
    conn.close()
    with pytest.raises(LogCorruptError, match="do not hash to the root"):
        sqlite_store(tmp_path)
    conn = sqlite3.connect(path)
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"room_events", "merkle_nodes", "merkle_logs"} <= tables
    assert conn.execute("SELECT COUNT(*) FROM room_events").fetchone()[0] == room.seq
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


def test_events_round_trip_through_the_wire_and_a_forged_hash_is_caught():
    room = new_room(PEOPLE)
    event = room.apply(point(label="apex"), "stu", 1)
    wire = event.to_wire()
    assert set(wire) == {"seq", "hash", "at", "author", "kind", "data"}
    assert Event.from_wire(ROOM, wire) == event
    for forged in ({**wire, "author": "ines"}, {**wire, "data": {**wire["data"], "label": "x"}},
                   {**wire, "hash": "00" * 32}):
        with pytest.raises(EventError):
            Event.from_wire(ROOM, forged)
    with pytest.raises(EventError):
        Event.from_wire("room-2", wire)  # the room is part of the leaf


def test_replay_schedule_follows_server_time_at_any_speed():
    clock = Clock()
    room = new_room(PEOPLE, clock=clock)
    base = clock.now
    for offset in (1000, 1500, 61500, 62000):
        room.apply(point(), "sam", base + offset)
    events = room.events_since(room.seq - 4)
    assert [d for d, _ in schedule(events)] == [0.0, 0.5, 60.0, 0.5]
    assert [d for d, _ in schedule(events, speed=4)] == [0.0, 0.125, 15.0, 0.125]
    assert [d for d, _ in schedule(events, speed=2, max_gap=3)] == [0.0, 0.25, 3.0, 0.25]
    assert [e.seq for _, e in schedule(events)] == [e.seq for e in events]
    with pytest.raises(ValueError):
        list(schedule(events, speed=0))
    with pytest.raises(ValueError):
        list(schedule(events[::-1]))


def test_replay_schedule_merges_the_avatar_track_by_server_time():
    clock = Clock()
    room = new_room(PEOPLE, clock=clock)
    base = clock.now
    for offset in (1000, 3000):
        room.apply(point(), "sam", base + offset)
    first, second = room.events_since(room.seq - 2)
    head = {"head": {"position": [0, 1.6, 0], "quaternion": [0, 0, 0, 1]}}
    track = [TrackPoint(base + 500, "sam", head),  # before the first event played: dropped
             TrackPoint(base + 1000, "sam", head),  # the same time as an event: after it
             TrackPoint(base + 2000, "ines", head),
             TrackPoint(base + 3500, "sam", head)]
    played = list(schedule([first, second], speed=2, track=track))
    assert [(d, getattr(item, "seq", None) or item.at - base) for d, item in played] == [
        (0.0, first.seq), (0.0, 1000), (0.5, 2000), (0.5, second.seq), (0.25, 3500)]
    assert [d for d, _ in schedule([first, second], max_gap=0.2, track=track)] == [0.0, 0.0, 0.2, 0.2, 0.2]
    with pytest.raises(ValueError):
        list(schedule([second, first], track=track))


def test_replay_seeks_to_any_seq():
    clock = Clock()
    room = new_room(PEOPLE, clock=clock)
    first = room.apply(point(), "sam", clock())
    room.apply({"kind": "annotation.delete", "id": first.data["id"]}, "sam", clock())
    events = room.events_since(0)
    assert first.data["id"] in state_at(events, first.seq).annotations
    assert state_at(events, room.seq).snapshot() == room.state.snapshot()

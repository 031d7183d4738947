"""The stores on a real PostgreSQL: the room logs (heads, reopening, the (log, seq) fence), the catalog, the room
database, checkpoints and the local anchor chain, each checked against what the SQLite store does."""

from __future__ import annotations

import psycopg
import pytest
from rooms import ROOM, Clock, fill, new_room, point, rfc6962_root

from server.storage.catalog import Batch, Catalog, SeriesRecord
from server.storage.checkpoints import CheckpointStore
from server.storage.errors import StorageError
from server.storage.postgres import PgConnection
from server.storage.postgres_log import PostgresLogStore
from server.storage.roomdb import RoomCode, RoomDatabase, RoomRecord
from sessions.events import Event
from sessions.ledger.anchors import LocalAnchorChain
from sessions.ledger.merkle import leaf_hash, verify_consistency, verify_inclusion
from sessions.ledger.note import Checkpoint
from sessions.log import EventLog, LogConflictError, LogCorruptError, MemoryLogStore
from sessions.roles import Role
from sessions.room import Room, RoomInfo, RoomMode

PEOPLE = {"ines": Role.INSTRUCTOR, "sam": Role.SURGEON, "stu": Role.STUDENT}



def _store(url: str) -> PostgresLogStore:
    return PostgresLogStore(PgConnection(url, autocommit=True))



def test_a_room_logged_in_postgresql_has_the_rfc6962_head_and_reopens_identical(pg_url):
    clock, memory_clock = Clock(), Clock()
    store = _store(pg_url)
    room = new_room(PEOPLE, store=store, clock=clock)
    reference = new_room(PEOPLE, store=MemoryLogStore(), clock=memory_clock)
    fill(room, clock, 40)
    fill(reference, memory_clock, 40)
    events = room.events_since(0)
    assert room.head == reference.head == rfc6962_root([e.leaf() for e in events]).hex()

    again = _store(pg_url)  # another process
    assert again.rooms() == [ROOM]
    reopened = Room.open(EventLog(again, ROOM))
    assert (reopened.state.snapshot(), reopened.head, reopened.seq) == (room.state.snapshot(), room.head, room.seq)
    size, root = room.seq, bytes.fromhex(room.head)
    for event in reopened.events_since(0):
        verify_inclusion(bytes.fromhex(event.hash), event.seq - 1, size, reopened.log.inclusion_proof(event.seq),
                         root)
    verify_consistency(9, size, reopened.log.consistency_proof(9, size), reopened.log.root(9), root)
    assert list(again.nodes_mismatch(ROOM)) == []


def test_one_commit_writes_the_events_of_several_rooms_in_one_transaction(pg_url):
    store = _store(pg_url)
    rooms = []
    for n in range(3):
        log = EventLog(store, f"room-{n}")
        room = Room.create(RoomInfo(f"room-{n}", RoomMode.CONSULT), log, 1)
        room.join("sam", "Sam", Role.SURGEON, 2)
        room.deferred = True
        rooms.append(room)
    staged = [room.apply(point(float(i)), "sam", 3 + i) for i in range(5) for room in rooms]
    other = _store(pg_url)
    assert [other.last_seq(f"room-{n}") for n in range(3)] == [2, 2, 2]  # staged, not yet written
    store.commit()
    assert [other.last_seq(f"room-{n}") for n in range(3)] == [7, 7, 7]
    assert len(staged) == 15
    for room in rooms:
        assert Room.open(EventLog(other, room.id)).head == room.head


def test_two_owners_of_a_room_cannot_both_append_the_same_seq(pg_url):
    first_store, second_store = _store(pg_url), _store(pg_url)
    first = new_room(PEOPLE, store=first_store)
    bystander = Room.create(RoomInfo("room-2", RoomMode.CONSULT), EventLog(first_store, "room-2"), 1)
    bystander.join("sam", "Sam", Role.SURGEON, 2)
    second = Room.open(EventLog(second_store, ROOM))  # a process that took the room over
    taken = second.apply(point(2.0), "sam", 10)

    # The stale owner stages its own seq n (and an event of another room) in one group commit.
    first.deferred = bystander.deferred = True
    stale = first.apply(point(9.0), "sam", 11)
    kept = bystander.apply(point(1.0), "sam", 12)
    assert stale.seq == taken.seq
    with pytest.raises(LogConflictError) as conflict:
        first_store.commit()
    assert conflict.value.rooms == {ROOM}
    # Nothing of the loser is stored, the other room's event is, and the log has no fork and no gap.
    reader = _store(pg_url)
    stored = Room.open(EventLog(reader, ROOM))
    assert stored.seq == taken.seq and stored.events_since(taken.seq - 1)[0].hash == taken.hash
    assert Room.open(EventLog(reader, "room-2")).seq == kept.seq
    assert list(reader.nodes_mismatch(ROOM)) == []


def test_an_altered_event_row_is_detected(pg_url):
    store = _store(pg_url)
    clock = Clock()
    room = new_room(PEOPLE, store=store, clock=clock)
    fill(room, clock, 8)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        changed = conn.execute("UPDATE events SET leaf = convert_to(replace(convert_from(leaf, 'UTF8'), 'p3', 'p4'),"
                               " 'UTF8') WHERE position('\"p3\"'::bytea in leaf) > 0").rowcount
        assert changed == 1
    with pytest.raises(LogCorruptError):
        Room.open(EventLog(_store(pg_url), ROOM))


def _series(study: str) -> SeriesRecord:
    return SeriesRecord("se1", study, "1.2.3", "CT", "HEAD", 3, 512, 512, [0.5, 0.5, 1.25], "ab" * 32)


def _catalog_story(catalog: Catalog) -> dict:
    """The same writes and reads, on either engine."""
    with catalog.transaction() as batch:
        assert isinstance(batch, Batch)
        batch.add_study("st1", "HEAD", "CT")
        batch.add_study("st1", "HEAD", "MR")
        for n in range(3):
            assert batch.instance_sha256(f"1.2.{n}") is None
            batch.add_instance(f"1.2.{n}", "st1", f"{n:064x}", 1000 + n)
        batch.put_series(_series("st1"))
        batch.put_series(_series("st1"))
    catalog.add_job({"id": "j1", "study_id": "st1", "series_id": "se1", "params": {"presets": ["bone"]},
                     "cache_key": "k"})
    catalog.update_job("j1", state="running", percent=42.5, stage="meshing")
    mesh = {"id": "m1", "study_id": "st1", "series_id": "se1", "preset": "bone", "threshold": 300.0,
            "triangles": 10, "vertices": 8, "bbox_lps_mm": [[0, 0, 0], [1, 1, 1]], "artifacts": {"draco": "ff" * 32},
            "params": {"target_triangles": 1000}}
    catalog.add_mesh(mesh)
    catalog.add_mesh({**mesh, "triangles": 12})
    catalog.add_segmentation({"id": "sg1", "study_id": "st1", "series_id": "se1", "format": "SEG",
                              "files": [{"digest": "ee" * 32, "suffix": ".dcm"}], "masks": "dd" * 32,
                              "structures": [{"number": 1, "name": "Liver", "color": "#dd8265",
                                              "code": {"value": "10200004"}, "volume_ml": 70.4}]})
    with pytest.raises(ValueError):
        catalog.update_job("j1", state="lost")
    job = catalog.job("j1")
    story = {
        "studies": [(s["id"], s["modalities"], s["description"]) for s in catalog.studies()],
        "series": [{k: v for k, v in s.items()} for s in catalog.series_of("st1")],
        "instances": catalog.instance_count("st1"),
        "job": (job["state"], job["percent"], job["stage"], job["params"]),
        "running": [j["id"] for j in catalog.jobs_in(("running",))],
        "mesh": {k: v for k, v in catalog.mesh("m1").items() if k != "created_at"},
        "segmentation": catalog.segmentation("sg1")["structures"],
        "referenced": sorted(catalog.referenced()),
    }
    story["deleted"] = catalog.delete_study("st1")
    story["after"] = (catalog.studies(), catalog.mesh("m1"), catalog.referenced())
    return story


def test_the_catalog_in_postgresql_reads_back_what_sqlite_does(pg_url, tmp_path):
    on_sqlite = _catalog_story(Catalog(tmp_path / "catalog.sqlite"))
    on_postgres = _catalog_story(Catalog(pg_url))
    assert on_postgres == on_sqlite
    assert on_postgres["mesh"]["triangles"] == 12 and on_postgres["studies"] == [("st1", "CT\\MR", "HEAD")]
    Catalog(pg_url)  # opening again (another process) keeps the schema


def test_the_room_database_stages_a_room_with_its_first_event(pg_url):
    db = RoomDatabase(pg_url)
    record = RoomRecord("rm1", 1000, 2000, {"instructor": "Dr Moreau"})
    db.stage_room(record)
    db.stage_code(RoomCode("ABC123", "rm1", Role.STUDENT, 2000))
    other = RoomDatabase(pg_url)
    assert other.records() == [] and other.code("ABC123") is None  # staged, not written
    Room.create(RoomInfo("rm1", RoomMode.TRAINING), EventLog(db.logs, "rm1"), 1000)
    assert other.records() == [record] and other.record("rm1") == record
    assert other.code("ABC123") == RoomCode("ABC123", "rm1", Role.STUDENT, 2000)
    assert other.code_taken("ABC123", 1999) and not other.code_taken("ABC123", 2001)
    newer = other.next_generation(record, Role.STUDENT, RoomCode("XYZ789", "rm1", Role.STUDENT, 2000))
    assert db.record("rm1") == newer and newer.generation(Role.STUDENT) == 1
    assert set(db.codes_of("rm1").values()) == {RoomCode("XYZ789", "rm1", Role.STUDENT, 2000)}

    db.stage_room(RoomRecord("rm2", 1000, 2000, {}))
    db.rollback()
    Room.create(RoomInfo("rm3", RoomMode.CONSULT), EventLog(db.logs, "rm3"), 1000)
    assert [r.id for r in other.records()] == ["rm1"]  # rm2's row went with the rollback; rm3 has none


def test_checkpoints_and_the_anchor_chain_are_shared_without_forks(pg_url):
    conns = [PgConnection(pg_url, autocommit=True) for _ in range(2)]
    stores = [CheckpointStore(conn) for conn in conns]
    chains = [LocalAnchorChain(conn, clock=lambda: 5) for conn in conns]
    checkpoint = Checkpoint("theatrum.local/rooms/rm1", 4, bytes(range(32)), 1000)
    assert stores[0].add("rm1", checkpoint, "note", ["local"], 1000)
    assert not stores[1].add("rm1", checkpoint, "other note", ["local"], 1001)  # the first cut stands
    assert [c.note for c in stores[1].checkpoints("rm1")] == ["note"]
    (row,) = stores[1].due("local", 2000)
    assert stores[0].claim(row, 9000) and not stores[1].claim(row, 9000)  # one process attempts it

    for n in range(6):
        chains[n % 2].append("rm1", Checkpoint(checkpoint.origin, 4 + n, bytes([n]) * 32, 1000 + n))
    chains[0].verify()
    assert [a.index for a in chains[1].records()] == list(range(6))
    with pytest.raises(psycopg.Error, match="append-only"), conns[0].transaction():
        conns[0].execute("UPDATE anchor_chain SET room = 'rm2' WHERE idx = 1")
    with pytest.raises(psycopg.Error, match="append-only"), conns[0].transaction():
        conns[0].execute("DELETE FROM anchor_chain WHERE idx = 5")


def test_an_unreachable_database_is_a_storage_error_naming_the_store(postgres_server):
    url = postgres_server.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(StorageError, match="catalog"):
        Catalog(url)


def test_wire_events_survive_the_round_trip(pg_url):
    store = _store(pg_url)
    room = new_room(PEOPLE, store=store)
    event = room.apply(point(3.0, label="apex"), "sam", 99)
    (again,) = Room.open(EventLog(_store(pg_url), ROOM)).events_since(event.seq - 1)
    assert Event.from_wire(ROOM, again.to_wire()) == event == again
    assert leaf_hash(again.leaf()).hex() == event.hash

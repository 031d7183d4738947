"""The session hub through real python-socketio clients against a running server.

Join and snapshot, ops with acks and events in one total order, every negative ack, refused connections,
resume (exact missed events, or a snapshot), kick, close, replay, convergence of 20 clients, a restart that
gives back the same state and head, permissions over the socket, poses batched at the tick, avatar expiry.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import socketio
from hubtools import BONE, Lobby, RoomClient, admin, until

from server.appkeys import METRICS
from sessions.events import SERVER, Event
from sessions.ledger.tree import MemoryNodeStore, MerkleLog

POINT = {"type": "point", "position": [-32.5, 14.0, 61.25], "label": "round window"}
POSE = {"head": {"position": [0.1, 1.6, 0.4], "quaternion": [0, 0, 0, 1]}}


@pytest.fixture
async def lobby(aiohttp_server, tmp_path):
    """`await lobby(**settings)`: a running server with one consult room."""
    opened: list[Lobby] = []

    async def make(**overrides) -> Lobby:
        opened.append(await Lobby.open(aiohttp_server, tmp_path / f"data{len(opened)}", **overrides))
        return opened[-1]

    yield make
    for each in opened:
        await each.close()


def head_of(hashes: list[str]) -> str:
    """The Merkle root of leaf hashes (hex), as a client folds them."""
    tree = MerkleLog(MemoryNodeStore())
    for leaf in hashes:
        tree.append(bytes.fromhex(leaf))
    return tree.root().hex()


def pose(x: float) -> dict:
    return {"head": {"position": [x, 1.6, 0.4], "quaternion": [0, 0, 0, 1]}}


# ---- join, snapshot, ops, events ------------------------------------------------------------------------

async def test_websockets_are_served_without_permessage_deflate_and_still_carry_the_room(lobby):
    """A browser always offers permessage-deflate; the server declines it (plain frames), and the socket works."""
    room = await lobby()
    async with room.http.ws_connect("/socket.io/?EIO=4&transport=websocket", compress=15) as ws:
        assert "Sec-WebSocket-Extensions" not in ws._response.headers
        assert ws.compress == 0
        opened = await ws.receive_str(timeout=5)
        assert opened.startswith("0{") and '"sid"' in opened  # engine.io OPEN
        await ws.send_str("40" + json.dumps({"token": await room.token("surgeon")}))
        connected = await ws.receive_str(timeout=5)
        assert connected.startswith("40{"), connected  # socket.io CONNECT accepted
        snapshot = await ws.receive_str(timeout=5)
        assert snapshot.startswith('42["snapshot",') and room.id in snapshot
        await ws.send_str("421" + json.dumps(["op", {"kind": "annotation.create", **POINT}]))
        frames = []
        while not frames or not frames[-1].startswith("431"):  # until the ack of op 1
            frames.append(await ws.receive_str(timeout=5))
        ack = json.loads(frames[-1][3:])[0]
        events = [json.loads(f[2:])[1] for f in frames if f.startswith('42["event",')]
        assert ack["ok"] and [e["seq"] for e in events][-1] == ack["seq"]  # the op's event came before its ack
    async with room.http.ws_connect("/socket.io/?EIO=4&transport=websocket") as ws:
        assert (await ws.receive_str(timeout=5)).startswith("0{")  # a client offering nothing is served too


async def test_a_joining_client_gets_the_snapshot_and_the_room_sees_the_join(lobby):
    room = await lobby()
    ines = await room.client("instructor", "Dr Ines Moreau")
    [snapshot] = ines.snapshots
    assert snapshot["room"] == {"id": room.id, "mode": "consult", "title": "Temporal bone",
                                "study": "st-test-study", "meshes": [BONE], "closed": False}
    assert snapshot["you"]["name"] == "Dr Ines Moreau" and snapshot["you"]["role"] == "instructor"
    assert snapshot["you"]["present"] and list(snapshot["participants"]) == [snapshot["you"]["id"]]
    assert set(snapshot["state"]) == {"annotations", "clips", "slices", "model", "locks", "follow", "structures",
                                      "growing", "voice"}
    assert snapshot["seq"] == 3 == room.live.room.seq  # room.open, mesh.provenance, then this join
    assert snapshot["head"] == room.live.room.head
    assert ines.poses == [{"poses": {}, "gone": []}]

    sam = await room.client("surgeon", "Sam Okafor")
    await ines.wait_seq(4)
    join = ines.events[-1]
    assert (join.seq, join.author, join.kind) == (4, SERVER, "participant.join")
    assert join.data == {"participant": sam.you["id"], "name": "Sam Okafor", "role": "surgeon",
                         "seat": {"index": 1, "tier": 0, "angle": 60.0}}
    assert snapshot["you"]["seat"] == {"index": 0, "tier": 0, "angle": 0.0}
    assert sam.snapshots[0]["seq"] == 4 and sam.you["id"] != ines.you["id"]
    assert room.app[METRICS].sockets._value.get() == 2


async def test_ops_are_acked_and_broadcast_to_everyone_in_one_total_order(lobby):
    room = await lobby()
    ines, sam = await room.client("instructor"), await room.client("surgeon")
    ops = [("annotation.create", {"type": "measurement", "a": [0, 0, 0], "b": [3, 4, 12], "label": "height"}),
           ("annotation.create", POINT),
           ("clip.set", {"plane": {"normal": [0, -2, 0], "constant": 0.05}}),
           ("model.transform", {"position": [0, 1.25, -0.6], "scale": 2.0}),
           ("pointer.highlight", {"position": [0.01, 0.02, 0.03], "target": BONE})]
    acks = await asyncio.gather(*(client.op(kind, **fields) for kind, fields in ops
                                  for client in (ines, sam)))
    assert all(ack["ok"] for ack in acks), acks
    first = room.live.room.seq - len(acks) + 1
    assert sorted(ack["seq"] for ack in acks) == list(range(first, room.live.room.seq + 1))
    await room.settle()
    for client in (ines, sam):
        assert client.duplicates == client.gaps == 0
        assert client.state.snapshot() == room.live.room.state.snapshot()
    assert [e.hash for e in ines.events if e.seq >= first] == [e.hash for e in sam.events if e.seq >= first]
    by_seq = {e.seq: e for e in ines.events}
    for ack, (client, (kind, _)) in zip(acks, [(c, op) for op in ops for c in (ines, sam)], strict=True):
        event = by_seq[ack["seq"]]
        assert (event.kind, event.author) == (kind, client.you["id"])  # the sender gets its own event too
    measurement = next(e for e in ines.events if e.data.get("type") == "measurement")
    assert measurement.data["length_mm"] == 13.0 and measurement.data["layer"] == measurement.author
    clip = next(e for e in ines.events if e.kind == "clip.set")
    assert clip.data["normal"] == [0.0, -1.0, 0.0] and clip.data["id"] == f"c{clip.seq}"


NEGATIVE = [
    ("invalid: unknown kind", "instructor", {"kind": "annotation.paint"}, "invalid", None),
    ("invalid: client author", "instructor", {"kind": "annotation.create", **POINT, "author": "x"}, "invalid",
     "'author' is set by the server, not the client"),
    ("invalid: NaN", "instructor", {"kind": "annotation.create", "type": "point",
                                    "position": [0, float("nan"), 0]}, "invalid", None),
    ("invalid: not an object", "instructor", ["annotation.create"], "invalid", "an op must be a JSON object"),
    ("forbidden: observer", "observer", {"kind": "annotation.create", **POINT}, "forbidden",
     "observers are read-only"),
    ("forbidden: student clip", "student", {"kind": "clip.set", "plane": {"normal": [0, 1, 0], "constant": 0}},
     "forbidden", "students may not set clip planes"),
    ("not_found: annotation", "instructor", {"kind": "annotation.update", "id": "a999", "label": "x"},
     "not_found", None),
    ("not_found: participant", "instructor", {"kind": "participant.mute", "participant": "p-nobody",
                                              "muted": True}, "not_found", None),
    ("limit: label", "instructor", {"kind": "annotation.create", **POINT, "label": "x" * 201}, "limit", None),
    ("limit: size", "instructor", {"kind": "annotation.create", "type": "note", "text": "x" * 70_000},
     "limit", None),
]


@pytest.mark.parametrize(("case", "role", "message", "code", "detail"), NEGATIVE, ids=[n[0] for n in NEGATIVE])
async def test_every_refusal_is_a_negative_ack_and_leaves_no_trace(lobby, case, role, message, code, detail):
    room = await lobby()
    client = await room.client(role)
    ines = client if role == "instructor" else await room.client("instructor")
    seq, head = room.live.room.seq, room.live.room.head
    ack = await client.call("op", message)
    assert ack["ok"] is False and ack["error"]["code"] == code, ack
    assert ack["error"]["detail"] and (detail is None or ack["error"]["detail"] == detail)
    assert (room.live.room.seq, room.live.room.head) == (seq, head)
    next_op = await ines.op("pointer.highlight", position=[0, 0, 0])
    assert next_op["seq"] == seq + 1  # no seq was used by the refused op
    await client.wait_seq(seq + 1)
    assert client.events[-1].kind == "pointer.highlight" and client.gaps == 0


async def test_a_stale_version_is_refused_with_the_current_version(lobby):
    room = await lobby()
    ines, sam = await room.client("instructor"), await room.client("surgeon")
    created = await ines.op("annotation.create", **POINT)
    moved = await sam.op("annotation.update", id=f"a{created['seq']}", version=created["seq"],
                         position=[1, 2, 3])
    assert moved["ok"]
    stale = await ines.op("annotation.update", id=f"a{created['seq']}", version=created["seq"],
                          position=[4, 5, 6])
    assert stale == {"ok": False, "error": {
        "code": "stale_version", "version": moved["seq"],
        "detail": f"annotation a{created['seq']} changed after version {created['seq']}; "
                  f"it is now at version {moved['seq']}"}}
    other_field = await ines.op("annotation.update", id=f"a{created['seq']}", version=created["seq"],
                                label="niche")  # a different field still merges
    assert other_field["ok"]
    rebased = await ines.op("annotation.update", id=f"a{created['seq']}", version=other_field["seq"],
                            position=[4, 5, 6])
    assert rebased["ok"]


async def test_room_and_client_limits_are_negative_acks(lobby):
    room = await lobby(room_max_annotations=2, room_op_rate=0.01, room_op_burst=4)
    ines = await room.client("instructor")
    acks = [await ines.op("annotation.create", **POINT) for _ in range(4)]
    assert [a["ok"] for a in acks] == [True, True, False, False]
    assert acks[2]["error"]["code"] == "limit" and "annotations" in acks[2]["error"]["detail"]
    assert acks[3]["error"]["code"] == "limit"
    over = await ines.op("pointer.highlight", position=[0, 0, 0])  # the burst of 4 is spent
    assert over["error"]["code"] == "limit" and over["error"]["detail"].startswith("too many ops")
    resume = await ines.call("resume", {"last_seq": 0})  # a resume costs an op too
    assert resume["ok"] is False and resume["error"]["code"] == "limit"


async def test_repeated_violations_end_in_a_disconnect(lobby):
    room = await lobby()
    stu = await room.client("student")
    for _ in range(20):
        ack = await stu.op("clip.clear")
        assert ack["error"]["code"] == "forbidden"
    assert stu.sio.connected
    last = await stu.op("clip.clear")  # the 21st within 10 s: acked, then disconnected
    assert last["error"]["code"] == "forbidden"
    await asyncio.wait_for(stu.disconnected.wait(), 10)
    await until(lambda: room.live.room.participant(stu.you["id"]).present is False, "the leave")


async def test_a_race_is_not_a_violation(lobby):
    room = await lobby()
    ines = await room.client("instructor")
    for _ in range(25):
        assert (await ines.op("annotation.delete", id="a999"))["error"]["code"] == "not_found"
    assert ines.sio.connected and (await ines.op("pointer.highlight", position=[0, 0, 0]))["ok"]


# ---- connecting ----------------------------------------------------------------------------------------

async def test_invalid_or_expired_invites_are_refused(lobby):
    room = await lobby()
    good = await room.token("student")
    payload, mac = good.split(".")
    signer = room.hub.invites
    tokens = {
        "garbage": "not-a-token",
        "tampered": payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + "." + mac,
        "other key": payload + "." + mac[::-1],
        "expired": signer.issue(room.id, "student", "Late", int(time.time()) - 1),
        "unknown room": signer.issue("rm-nowhere", "instructor", "Ghost", int(time.time()) + 60),
        "empty": "",
        "not a string": 12345,
    }
    for case, token in tokens.items():
        client = RoomClient(room.url, token)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect()
        assert client.refusal == {"message": "invalid or expired invite"}, case
    client = RoomClient(room.url, good)
    client.sio = sio = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(room.url, transports=["websocket"], wait_timeout=5)  # no auth at all
    assert [p.name for p in room.live.room.state.participants.values()] == []
    assert room.app[METRICS].sockets._value.get() == 0


async def test_a_second_tab_of_the_same_invite_is_the_same_participant(lobby):
    room = await lobby()
    ines = await room.client("instructor")
    token = await room.token("student", "Stu")
    tab1 = await room.client("student", token=token)
    tab2 = await room.client("student", token=token)
    assert tab1.you["id"] == tab2.you["id"]
    seq = room.live.room.seq
    await tab1.close()
    await tab2.op("pointer.highlight", position=[0, 0, 0])  # still in: no leave was logged
    await room.settle()
    assert [e.kind for e in ines.events if e.seq > seq] == ["pointer.highlight"]
    await tab2.close()
    await until(lambda: ines.events[-1].kind == "participant.leave", "the leave")
    assert ines.events[-1].data == {"participant": tab1.you["id"], "reason": "left"}


# ---- resume --------------------------------------------------------------------------------------------

async def test_a_reconnect_with_last_seq_gets_exactly_the_missed_events(lobby):
    room = await lobby()
    ines = await room.client("instructor")
    token = await room.token("surgeon", "Sam")
    sam = await room.client("surgeon", token=token)
    await ines.op("annotation.create", **POINT)
    await room.settle()
    await sam.close()
    had = sam.seq
    for x in range(5):
        await ines.op("annotation.create", type="point", position=[x, 0, 0])
    await sam.connect(last_seq=had)
    await sam.wait_seq(room.live.room.seq)
    missed = [seq for seq in sam.received if seq > had]
    assert missed == list(range(had + 1, room.live.room.seq + 1))  # leave, 5 ops, the re-join: in order
    assert sam.duplicates == sam.gaps == 0 and len(sam.snapshots) == 1
    assert [e.kind for e in sam.events[-7:]] == ["participant.leave", *["annotation.create"] * 5,
                                                 "participant.join"]
    live = await ines.op("annotation.create", **POINT)  # and the live stream follows on
    await sam.wait_seq(live["seq"])
    assert sam.state.snapshot() == room.live.room.state.snapshot() and sam.gaps == 0


async def test_resume_on_a_live_socket_sends_the_asked_events_then_acks(lobby):
    room = await lobby()
    ines = await room.client("instructor")
    for x in range(3):
        await ines.op("annotation.create", type="point", position=[x, 0, 0])
    await room.settle()
    before = len(ines.received)
    ack = await ines.call("resume", {"last_seq": ines.seq - 2})
    assert ack == {"ok": True, "seq": ines.seq, "snapshot": False}
    assert ines.received[before:] == [ines.seq - 1, ines.seq]  # re-sent in order (the client ignores them)
    bad = await ines.call("resume", {"last_seq": "five"})
    assert bad["ok"] is False and bad["error"]["code"] == "invalid"


async def test_far_behind_or_confused_clients_get_a_snapshot(lobby):
    room = await lobby()
    ines = await room.client("instructor")
    stu_token = await room.token("student")
    stu = await room.client("student", token=stu_token)
    await stu.close()
    live = room.live.room
    for _ in range(live.limits.max_resume_events + 1):  # fast, on the server side
        live.apply({"kind": "pointer.highlight", "position": [0, 0, 0]}, ines.you["id"], 1)
    await stu.connect(last_seq=2)
    await until(lambda: len(stu.snapshots) == 2, "a fresh snapshot")
    assert stu.snapshots[-1]["seq"] == live.seq and stu.snapshots[-1]["head"] == live.head
    ack = await ines.call("resume", {"last_seq": live.seq + 10})  # from the future
    assert ack["snapshot"] is True
    await until(lambda: len(ines.snapshots) == 2, "a fresh snapshot")


# ---- moderation, close, replay -------------------------------------------------------------------------

async def test_a_kicked_participant_is_disconnected_and_cannot_return(lobby):
    room = await lobby()
    ines = await room.client("instructor")
    token = await room.token("student", "Stu")
    stu = await room.client("student", token=token)
    await stu.send("pose", POSE)
    ack = await ines.op("participant.kick", participant=stu.you["id"])
    assert ack["ok"]
    await asyncio.wait_for(stu.disconnected.wait(), 10)
    assert stu.events[-1].kind == "participant.kick"  # it saw the kick before the disconnect
    await room.settle()
    assert ines.events[-1].kind == "participant.kick"  # and no leave follows a kick
    back = RoomClient(room.url, token)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await back.connect()
    assert back.refusal == {"message": "you were removed from this room", "data": {"code": "forbidden"}}
    glb = await room.http.get(f"/api/meshes/{BONE}.glb", headers={"Authorization": f"Bearer {token}"})
    assert glb.status == 403


async def test_closing_a_room_disconnects_everyone_and_refuses_later_joins(lobby):
    room = await lobby()
    ines, sam = await room.client("instructor"), await room.client("surgeon")
    assert room.app[METRICS].rooms._value.get() == 1
    response = await room.http.post(f"/api/rooms/{room.id}/close", headers=admin(room.app))
    assert response.status == 200 and (await response.json())["closed"] is True
    for client in (ines, sam):
        await asyncio.wait_for(client.disconnected.wait(), 10)
        assert client.events[-1].kind == "room.close"
    assert room.app[METRICS].rooms._value.get() == 0
    late = RoomClient(room.url, await room.token("student"))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await late.connect()
    assert late.refusal["message"] == "the room is closed"


async def test_a_replay_moves_the_avatars_between_the_events_as_they_moved(lobby):
    """The ~2 Hz avatar track is recorded (not logged) and merged into the replay by server time."""
    room = await lobby()
    ines, sam = await room.client("instructor"), await room.client("surgeon")
    sam_id = sam.you["id"]
    marks = []
    for x in (0.125, 0.25):
        await sam.send("pose", pose(x))
        await until(lambda x=x: room.live.poses.latest().get(sam_id, {}).get("head", {}).get("position", [0])[0] == x,
                    "the pose at the hub")
        await room.hub.tick()  # records the track sample
        marks.append((await ines.op("annotation.create", type="point", position=[x, 0, 0]))["seq"])
        await asyncio.sleep(0.55)  # the track keeps one sample per participant every 0.5 s
    await sam.close()
    await until(lambda: room.live.room.participant(sam_id).present is False, "sam's leave")
    await room.http.post(f"/api/rooms/{room.id}/close", headers=admin(room.app))

    viewer = RoomClient(room.url, await room.token("observer", "Reviewer"))
    await viewer.connect(replay={"speed": 100, "from": 1, "max_gap": 0.05})
    await until(lambda: any(name == "replay.end" for name, _ in viewer.other), "the end of the replay")
    heads = [(kind, item["poses"][sam_id]["head"]["position"][0]) for kind, item in viewer.arrivals
             if kind == "poses" and sam_id in item["poses"]]
    assert [x for _, x in heads] == [0.125, 0.25]
    # Each recorded pose arrives after the events before it and before the op it preceded.
    order = [("pose", item["poses"][sam_id]["head"]["position"][0]) if kind == "poses" and item["poses"]
             else ("gone", tuple(item["gone"])) if kind == "poses" else ("event", item)
             for kind, item in viewer.arrivals]
    assert order.index(("pose", 0.125)) < order.index(("event", marks[0])) < order.index(("pose", 0.25)) \
        < order.index(("event", marks[1]))
    leave = next(e.seq for e in room.live.room.events_since(0) if e.kind == "participant.leave"
                 and e.data["participant"] == sam_id)
    assert order.index(("event", leave)) < order.index(("gone", (sam_id,)))  # the avatar goes when sam left
    assert viewer.state.snapshot() == room.live.room.state.snapshot()
    await viewer.close()


async def test_a_closed_room_replays_read_only(lobby):
    room = await lobby()
    ines, sam = await room.client("instructor"), await room.client("surgeon")
    for x in range(4):
        await (ines if x % 2 else sam).op("annotation.create", type="point", position=[x, 0, 0])
    early = RoomClient(room.url, await room.token("observer"))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await early.connect(replay={"speed": 50})
    assert early.refusal["message"] == "only a closed room can be replayed"
    await room.http.post(f"/api/rooms/{room.id}/close", headers=admin(room.app))
    final = room.live.room

    viewer = RoomClient(room.url, await room.token("observer", "Reviewer"))
    viewer.room = room.id
    await viewer.connect(replay={"speed": 100, "from": 1, "max_gap": 0.01})
    await until(lambda: any(name == "replay.end" for name, _ in viewer.other), "the end of the replay")
    assert viewer.snapshots[0]["seq"] == 1 and viewer.snapshots[0]["head"] == final.events_since(0, 1)[0].hash
    assert viewer.received == list(range(2, final.seq + 1)) and viewer.gaps == 0
    assert viewer.state.snapshot() == final.state.snapshot()
    assert (await viewer.op("pointer.highlight", position=[0, 0, 0]))["error"]["detail"] == "a replay is read-only"
    assert final.seq == room.live.room.seq  # a replay logs nothing

    seek = RoomClient(room.url, viewer.token)
    seek.room = room.id
    await seek.connect(replay={"speed": 100, "from": final.seq - 2})
    await until(lambda: any(name == "replay.end" for name, _ in seek.other), "the end of the replay")
    assert seek.snapshots[0]["seq"] == final.seq - 2 and seek.received == [final.seq - 1, final.seq]
    assert seek.snapshots[0]["head"] == head_of([e.hash for e in final.events_since(0, final.seq - 2)])
    for bad in ({"speed": 0}, {"from": 0}, {"speed": "fast"}, {"rewind": True}, "now"):
        refused = RoomClient(room.url, viewer.token)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await refused.connect(replay=bad)
        assert refused.refusal["data"] == {"code": "invalid"}, bad
    await viewer.close()
    await seek.close()


# ---- permissions over the socket (a sample; tests/test_roles_matrix.py covers every cell) -------------

async def test_permissions_are_enforced_over_the_socket(lobby):
    room = await lobby()
    ines, sam = await room.client("instructor"), await room.client("surgeon")
    stu, obi = await room.client("student"), await room.client("observer")
    mine = await ines.op("annotation.create", **POINT)
    theirs = await stu.op("annotation.create", **POINT)
    assert mine["ok"] and theirs["ok"]
    cases = [
        (stu, "annotation.update", {"id": f"a{mine['seq']}", "label": "x"},
         "students may only edit their own annotations"),
        (stu, "annotation.update", {"id": f"a{theirs['seq']}", "label": "x"}, None),
        (sam, "annotation.delete", {"id": f"a{theirs['seq']}"}, None),
        (obi, "pointer.highlight", {"position": [0, 0, 0]}, "observers are read-only"),
        (stu, "model.transform", {"scale": 2.0}, "students may not move the model"),
        (sam, "participant.kick", {"participant": stu.you["id"]}, "surgeons may not remove participants"),
        (sam, "room.lock", {}, "surgeons may not lock the model"),
        (ines, "room.lock", {}, None),
        (sam, "model.transform", {"scale": 2.0}, "the model is locked by the instructor"),
        (ines, "model.transform", {"scale": 2.0}, None),
        (ines, "participant.mute", {"participant": stu.you["id"], "muted": True}, None),
        (stu, "pointer.highlight", {"position": [0, 0, 0]}, "you are muted by the instructor"),
        (ines, "participant.role", {"participant": stu.you["id"], "role": "surgeon"}, None),
        (ines, "participant.mute", {"participant": stu.you["id"], "muted": False}, None),
        (stu, "clip.set", {"plane": {"normal": [0, 1, 0], "constant": 0}}, None),  # now a surgeon
        (ines, "follow.start", {}, None),
        (sam, "follow.stop", {}, "surgeons may not end follow-me"),
    ]
    for client, kind, fields, refusal in cases:
        ack = await client.op(kind, **fields)
        if refusal is None:
            assert ack["ok"], (kind, ack)
        else:
            assert ack == {"ok": False, "error": {"code": "forbidden", "detail": refusal}}, kind
    await room.settle()
    assert stu.state.participant(stu.you["id"]).role.value == "surgeon"
    assert ines.state.follow == ines.you["id"]


# ---- convergence ---------------------------------------------------------------------------------------

async def test_twenty_clients_with_fifty_concurrent_ops_each_converge(lobby):
    room = await lobby(room_op_rate=1000.0, room_op_burst=100.0)
    clients = [await room.client("instructor" if n % 2 else "surgeon", f"Client {n}") for n in range(20)]
    shared = await clients[0].op("annotation.create", type="measurement", a=[0, 0, 0], b=[1, 1, 1])
    plane = await clients[0].op("clip.set", plane={"normal": [0, 1, 0], "constant": 0})
    await room.settle()

    def ops(n: int) -> list[dict]:
        out = []
        for k in range(50):
            x = n + k / 100
            measurement, clip = f"a{shared['seq']}", f"c{plane['seq']}"
            out.append([
                {"kind": "annotation.create", "type": "point", "position": [x, k, 1.0]},
                {"kind": "annotation.update", "id": measurement, "b": [x, 2.0, 3.0]},
                {"kind": "annotation.update", "id": measurement, "version": shared["seq"], "label": f"c{n}"},
                {"kind": "model.transform", "position": [x / 100, 1.0, 0.0], "scale": 1 + k / 100},
                {"kind": "clip.set", "id": clip, "plane": {"normal": [0, 1, 0], "constant": x / 100}},
            ][k % 5])
        return out

    acks = await asyncio.gather(*(c.call("op", op) for n, c in enumerate(clients) for op in ops(n)))
    assert len(acks) == 1000
    ok = [a for a in acks if a["ok"]]
    assert {a["error"]["code"] for a in acks if not a["ok"]} <= {"stale_version"}
    assert len(ok) >= 800 and len({a["seq"] for a in ok}) == len(ok)
    await room.settle()
    server = room.live.room
    log = await room.http.get(f"/api/rooms/{room.id}/events",
                              headers={"Authorization": f"Bearer {clients[0].token}"})
    history = [Event.from_wire(room.id, e) for e in (await log.json())["events"]]
    assert [e.seq for e in history] == list(range(1, server.seq + 1))
    for client in clients:
        assert client.duplicates == client.gaps == 0
        assert client.seq == server.seq
        assert client.state.snapshot() == server.state.snapshot()
        start = client.snapshots[0]["seq"]
        assert head_of([e.hash for e in history[:start]]) == client.snapshots[0]["head"]
        assert [e.hash for e in client.events] == [e.hash for e in history[start:]]
        assert head_of([e.hash for e in history[:start]] + [e.hash for e in client.events]) == server.head


# ---- restart -------------------------------------------------------------------------------------------

async def test_after_a_restart_rooms_come_back_with_the_same_state_and_head(aiohttp_server, tmp_path):
    data = tmp_path / "data"
    first = await Lobby.open(aiohttp_server, data)
    ines = await first.client("instructor")
    sam_token = await first.token("surgeon", "Sam")
    sam = await first.client("surgeon", token=sam_token)
    await sam.op("annotation.create", type="measurement", a=[0, 0, 0], b=[3, 4, 12], label="height")
    await ines.op("clip.set", plane={"normal": [0, 1, 0], "constant": 0.1})
    await ines.op("room.lock")
    await ines.op("participant.mute", participant=sam.you["id"], muted=True)
    await first.settle()
    await ines.close()
    await until(lambda: not first.live.room.participant(ines.you["id"]).present, "the instructor's leave")
    state, head, seq = first.live.room.state.snapshot(), first.live.room.head, first.live.room.seq
    await first.server.close()  # sam is still connected: a server stop logs no leave
    assert first.live.room.seq == seq
    await asyncio.wait_for(sam.disconnected.wait(), 10)
    await first.http.close()

    second = await Lobby.open(aiohttp_server, data, room_rejoin_grace=0)
    again = second.hub.rooms[first.id].room
    assert (again.state.snapshot(), again.head, again.seq) == (state, head, seq)
    assert again.participant(sam.you["id"]).present  # until they come back or the grace ends
    sam.url = second.url
    await sam.connect(last_seq=sam.seq)  # nothing was missed, and coming back adds no event
    await until(lambda: sam.poses and sam.sio.connected, "the welcome")
    assert sam.state.snapshot() == again.state.snapshot() and again.seq == seq
    ack = await sam.op("annotation.create", **POINT)
    assert ack == {"ok": False, "error": {"code": "forbidden", "detail": "you are muted by the instructor"}}
    await sam.close()
    await until(lambda: again.seq == seq + 1, "sam's leave")
    await second.hub.tick()  # the grace is over for nobody else
    assert again.seq == seq + 1
    listed = await (await second.http.get("/api/rooms", headers=admin(second.app))).json()
    assert first.id in [room["id"] for room in listed["rooms"]]
    await second.close()


async def test_participants_who_never_come_back_after_a_restart_leave_after_the_grace(aiohttp_server,
                                                                                      tmp_path):
    data = tmp_path / "data"
    first = await Lobby.open(aiohttp_server, data)
    gone = await first.client("student")
    await first.server.close()
    await first.close()
    second = await Lobby.open(aiohttp_server, data, room_rejoin_grace=0)
    room = second.hub.rooms[first.id].room
    assert room.participant(gone.you["id"]).present
    await second.hub.tick()
    last = room.events_since(room.seq - 1)[0]
    assert (last.kind, last.data) == ("participant.leave", {"participant": gone.you["id"], "reason": "timeout"})
    await second.close()


# ---- poses ---------------------------------------------------------------------------------------------

async def test_poses_are_batched_per_room_at_the_tick_and_avatars_expire(lobby):
    room = await lobby(pose_expire=5.0)
    ines, sam = await room.client("instructor"), await room.client("surgeon")
    obi = await room.client("observer")
    seq = room.live.room.seq
    for x in (0.1, 0.2, 0.3):
        await ines.send("pose", pose(x))
    right = {"position": [0.25, 1.1, 0.2], "quaternion": [0.7071, 0, 0, 0.7071]}
    await sam.send("pose", {**pose(1.0), "right": right})
    hub = room.live.poses
    await until(lambda: hub.latest().get(ines.you["id"], {}).get("head", {}).get("position", [0])[0] == 0.3
                and sam.you["id"] in hub.latest(), "the poses at the server")
    frames = len(obi.poses)
    assert await room.hub.tick() == 1  # one frame for the room
    await until(lambda: len(obi.poses) == frames + 1, "the batched frame")
    frame = obi.poses[-1]
    assert frame["gone"] == [] and set(frame["poses"]) == {ines.you["id"], sam.you["id"]}
    assert frame["poses"][ines.you["id"]] == {"head": {"position": [0.3, 1.6, 0.4], "quaternion": [0, 0, 0, 1]}}
    assert frame["poses"][sam.you["id"]]["right"]["quaternion"] == [0.7071, 0.0, 0.0, 0.7071]
    assert await room.hub.tick() == 0  # nothing changed: nothing sent

    late = await room.client("student")  # a newcomer gets every live avatar at once
    assert set(late.poses[0]["poses"]) == {ines.you["id"], sam.you["id"]}

    await sam.close()  # disconnect: gone at the next tick
    await until(lambda: sam.you["id"] not in hub.latest(), "the avatar dropped")
    await room.hub.tick()
    await until(lambda: obi.poses[-1]["gone"] == [sam.you["id"]], "gone on disconnect")
    await room.hub.tick(time.monotonic() + 6.0)  # 5 s of silence: the avatar expires
    await until(lambda: obi.poses[-1]["gone"] == [ines.you["id"]], "gone after the expiry")
    logged = [e.kind for e in room.live.room.events_since(seq)]
    assert logged == ["participant.join", "participant.leave"]  # poses are not logged


async def test_malformed_poses_are_dropped_and_count_as_violations(lobby):
    room = await lobby()
    ines = await room.client("instructor")
    for bad in ({"head": {"position": [0, float("inf"), 0], "quaternion": [0, 0, 0, 1]}},
                {"head": {"position": [0, 0, 0], "quaternion": [0, 0, 0, 3]}}, {"hand": {}}, "pose"):
        await ines.send("pose", bad)
    await ines.op("pointer.highlight", position=[0, 0, 0])  # after the poses, in order
    assert room.live.poses.latest() == {}
    member = room.hub.members[ines.sio.get_sid()]
    assert len(member.violations._times) == 4


async def test_the_automatic_tick_fans_out_poses(lobby):
    room = await lobby(pose_tick_hz=20.0)
    ines, sam = await room.client("instructor"), await room.client("surgeon")
    await ines.send("pose", POSE)
    await until(lambda: any(ines.you["id"] in f["poses"] for f in sam.poses), "a tick with the pose")

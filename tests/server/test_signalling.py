"""The WebRTC signalling relay (server/services/signalling.py) and voice's HTTP side, over real sockets.

A real server (hubtools: the app on a loopback port) and real socket.io clients, several at once: a signal goes
from an open mic to a listener of the same room and to nobody else, never into the log nor the server's log;
a closed mic's offers are refused, also right after the instructor silenced it; another room's participant
cannot be reached; signals are rate-limited; a participant's newest connection carries their voice; and
GET /api/rooms/{id}/voice serves the ICE servers to the room's own people only.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from hubtools import Lobby, RoomClient, admin, create_room, until

from server.config import SettingsError, from_environment, parse_ice_servers

SDP = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=secret-looking-fingerprint\r\n"


def signals(client: RoomClient) -> list[dict]:
    return [data for name, data in client.other if name == "signal"]


async def signal(client: RoomClient, to: str, kind: str, **data) -> dict:
    return await client.call("signal", {"to": to, "data": {"type": kind, "link": 7, **data}})


@pytest.fixture
def quiet_log(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


async def test_an_open_mic_reaches_its_listener_and_nobody_else_and_nothing_is_logged(aiohttp_server, tmp_path,
                                                                                      quiet_log):
    lobby = await Lobby.open(aiohttp_server, tmp_path / "d", mode="consult")
    try:
        ines = await lobby.client("instructor", "Ines")
        sam = await lobby.client("surgeon", "Sam")
        stu = await lobby.client("student", "Stu")
        assert (await sam.op("voice.mic", on=True))["ok"]
        await lobby.settle()
        seq = lobby.live.room.seq

        # A listener asks the open mic for its audio; the mic offers; the listener answers.
        assert await signal(stu, sam.you["id"], "request") == {"ok": True}
        await until(lambda: signals(sam), "the request at the speaker")
        assert signals(sam) == [{"from": stu.you["id"], "data": {"type": "request", "link": 7}}]
        assert await signal(sam, stu.you["id"], "offer", sdp=SDP) == {"ok": True}
        await until(lambda: signals(stu), "the offer at the listener")
        assert signals(stu) == [{"from": sam.you["id"], "data": {"type": "offer", "link": 7, "sdp": SDP}}]
        assert await signal(stu, sam.you["id"], "answer", sdp=SDP) == {"ok": True}
        candidate = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 40000 typ host", "sdpMid": "0"}
        assert await signal(sam, stu.you["id"], "candidate", candidate=candidate) == {"ok": True}
        await until(lambda: len(signals(sam)) == 2 and len(signals(stu)) == 2, "the answer and the candidate")
        assert signals(stu)[1]["data"]["candidate"] == candidate

        # Nobody else heard any of it, nothing went into the room's log, nor into the server's log.
        await asyncio.sleep(0.1)
        assert signals(ines) == []
        assert lobby.live.room.seq == seq
        events = await (await lobby.http.get(f"/api/rooms/{lobby.id}/events", headers=admin(lobby.app))).json()
        assert "signal" not in json.dumps(events) and "secret-looking" not in json.dumps(events)
        assert not [r for r in quiet_log.records if "secret-looking" in r.getMessage() or "127.0.0.1 40000"
                    in r.getMessage()]
    finally:
        await lobby.close()


async def test_a_silenced_mic_cannot_offer_and_its_listeners_are_told_at_once(aiohttp_server, tmp_path):
    lobby = await Lobby.open(aiohttp_server, tmp_path / "d", mode="training")
    try:
        ines = await lobby.client("instructor", token=lobby.created["invites"]["instructor"]["token"])
        stu = await lobby.client("student", "Stu")
        sue = await lobby.client("student", "Sue")
        # A student without the floor: no mic, no offer.
        ack = await stu.op("voice.mic", on=True)
        assert ack["error"] == {"code": "forbidden",
                                "detail": "in a training room the instructor gives the floor: raise your hand"}
        ack = await signal(stu, sue.you["id"], "offer", sdp=SDP)
        assert ack == {"ok": False, "error": {"code": "forbidden",
                                              "detail": "your mic is not open: only an open mic sends audio"}}
        assert (await stu.op("hand.raise"))["ok"]
        assert (await ines.op("voice.allow", participant=stu.you["id"], allowed=True))["ok"]
        assert (await stu.op("voice.mic", on=True))["ok"]
        assert (await signal(stu, sue.you["id"], "offer", sdp=SDP))["ok"]

        # The instructor mutes everyone: every listener gets the event (the order to drop the stream), and the
        # student's next offer is refused even from a client that ignores the event.
        assert (await ines.op("voice.mute_all"))["ok"]
        await lobby.settle()
        assert sue.events[-1].kind == "voice.mute_all" and stu.you["id"] not in sue.state.voice.mics
        ack = await signal(stu, sue.you["id"], "offer", sdp=SDP)
        assert ack["error"]["code"] == "forbidden"
        assert (await stu.op("voice.mic", on=True))["error"]["code"] == "forbidden"
        # The same after a kick: the kicked participant's socket goes, and the room sees it leave.
        assert (await ines.op("voice.allow", participant=sue.you["id"], allowed=True))["ok"]
        assert (await sue.op("voice.mic", on=True))["ok"]
        assert (await ines.op("participant.kick", participant=sue.you["id"]))["ok"]
        await until(lambda: sue.disconnected.is_set(), "the kicked student's socket closing")
        await lobby.settle()
        assert ines.state.voice.mics == {}
    finally:
        await lobby.close()


async def test_a_participant_of_another_room_cannot_be_reached(aiohttp_server, tmp_path):
    lobby = await Lobby.open(aiohttp_server, tmp_path / "d", mode="consult")
    try:
        sam = await lobby.client("surgeon", "Sam")
        other = await create_room(lobby.http, lobby.app, "consult")
        token = other["invites"]["surgeon"]["token"]
        exchanged = await (await lobby.http.post("/api/invites/exchange", json={"token": token, "name": "Eve"})).json()
        eve = RoomClient(lobby.url, exchanged["token"])
        eve.room = other["room"]["id"]
        lobby.clients.append(eve)
        await eve.connect()
        await until(lambda: eve.poses, "Eve's welcome")
        assert (await sam.op("voice.mic", on=True))["ok"]
        assert (await eve.op("voice.mic", on=True))["ok"]

        ack = await signal(sam, eve.you["id"], "offer", sdp=SDP)
        assert ack == {"ok": False, "error": {"code": "not_found",
                                              "detail": f"no participant {eve.you['id']!r} is in this room"}}
        assert (await signal(eve, sam.you["id"], "request"))["error"]["code"] == "not_found"
        await asyncio.sleep(0.1)
        assert signals(eve) == [] and signals(sam) == []
    finally:
        await lobby.close()


async def test_signals_are_rate_limited_and_malformed_ones_get_a_reason(aiohttp_server, tmp_path):
    lobby = await Lobby.open(aiohttp_server, tmp_path / "d", mode="consult", room_signal_rate=1.0,
                             room_signal_burst=5.0, room_max_signal_bytes=2000)
    try:
        sam = await lobby.client("surgeon", "Sam")
        stu = await lobby.client("student", "Stu")
        assert (await sam.op("voice.mic", on=True))["ok"]
        acks = [await signal(stu, sam.you["id"], "request") for _ in range(7)]
        assert [a["ok"] for a in acks] == [True] * 5 + [False] * 2
        assert acks[-1]["error"] == {"code": "limit", "detail": "too many signals: at most 1 per second (bursts of 5)"}
        # Another participant has a budget of their own.
        big = await signal(sam, stu.you["id"], "offer", sdp="v=0" + "a" * 3000)
        assert big["error"]["code"] == "limit" and big["error"]["detail"].startswith("signal is ")
        assert (await sam.call("signal", None))["error"]["detail"] == "a signal must be a JSON object {to, data}"
        assert (await sam.call("signal", [1, 2]))["error"]["code"] == "invalid"
        assert sam.sio.connected and stu.sio.connected
    finally:
        await lobby.close()


async def test_the_newest_connection_of_a_participant_carries_their_voice(aiohttp_server, tmp_path):
    lobby = await Lobby.open(aiohttp_server, tmp_path / "d", mode="consult")
    try:
        sam = await lobby.client("surgeon", "Sam")
        token = await lobby.token("student", "Stu")
        desk = await lobby.client("student", token=token)
        headset = await lobby.client("student", token=token)  # the same person puts on a headset
        assert desk.you["id"] == headset.you["id"]
        assert (await sam.op("voice.mic", on=True))["ok"]
        assert (await signal(sam, desk.you["id"], "offer", sdp=SDP))["ok"]
        await until(lambda: signals(headset), "the offer on the newest connection")
        await asyncio.sleep(0.1)
        assert signals(desk) == []
        refused = await signal(desk, sam.you["id"], "answer", sdp=SDP)
        assert refused["error"] == {"code": "forbidden",
                                    "detail": "your voice is on your newer connection to this room"}
        assert (await signal(headset, sam.you["id"], "answer", sdp=SDP))["ok"]
        await headset.close()  # back to the desk
        await until(lambda: len(lobby.live.sockets[desk.you["id"]]) == 1, "the headset's socket gone")
        assert (await signal(desk, sam.you["id"], "answer", sdp=SDP))["ok"]
    finally:
        await lobby.close()


async def test_the_ice_servers_go_to_the_rooms_own_people_only(aiohttp_server, tmp_path):
    turn = [{"urls": ["turn:turn.example.org:3478?transport=udp"], "username": "theatrum", "credential": "s3cret"}]
    lobby = await Lobby.open(aiohttp_server, tmp_path / "d", mode="consult", ice_servers=json.dumps(turn),
                             room_max_open_mics=4)
    try:
        invite = lobby.created["invites"]["surgeon"]["token"]
        r = await lobby.http.get(f"/api/rooms/{lobby.id}/voice", headers={"Authorization": f"Bearer {invite}"})
        assert r.status == 200
        assert await r.json() == {"ice_servers": turn, "max_open_mics": 4, "max_signal_bytes": 16384}
        other = await create_room(lobby.http, lobby.app, "consult")
        foreign = other["invites"]["surgeon"]["token"]
        r = await lobby.http.get(f"/api/rooms/{lobby.id}/voice", headers={"Authorization": f"Bearer {foreign}"})
        assert r.status == 403
        public = await (await lobby.http.get("/api/config")).json()
        assert "s3cret" not in json.dumps(public) and public["room_limits"]["max_open_mics"] == 4
    finally:
        await lobby.close()


@pytest.mark.parametrize(("raw", "why"), [
    ("{", "is not JSON"),
    ('"stun:x"', "must be a JSON list"),
    ('[{"urls": "http://x"}]', "stun:, stuns:, turn: or turns: URLs"),
    ('[{"urls": "turn:x:3478"}]', "needs a username and a credential"),
    ('[{"urls": "stun:x", "user": "a"}]', "must be an object with urls"),
])
def test_a_bad_ice_servers_setting_is_refused_naming_what_is_wrong(raw, why):
    with pytest.raises(SettingsError, match=why):
        from_environment({"THEATRUM_ICE_SERVERS": raw})


def test_ice_servers_read_one_object_or_a_list_and_empty_is_none():
    assert parse_ice_servers("") == []
    assert parse_ice_servers('{"urls": "stun:stun.example.org:3478"}') == [{"urls": ["stun:stun.example.org:3478"]}]


GARBAGE = [None, 5, "offer", [], [{"to": "x"}], {"to": None, "data": {}}, {"to": "x" * 500, "data": {}},
           {"to": "p", "data": None}, {"to": "p", "data": {"type": ["offer"]}}, {"to": "p", "data": {"type": {}}},
           {"to": "p", "data": {"type": "offer", "link": 1e30, "sdp": "v=0"}},
           {"to": "p", "data": {"type": "candidate", "link": 1, "candidate": {"candidate": "c", "sdpMid": [1]}}},
           {"to": "p", "data": {"type": "request", "link": True}}, {"to": "\ud800", "data": {"type": "request"}}]


async def test_garbage_signals_get_a_reason_and_no_traceback(aiohttp_server, tmp_path, quiet_log):
    lobby = await Lobby.open(aiohttp_server, tmp_path / "d", mode="consult")
    try:
        sam = await lobby.client("surgeon", "Sam")
        for message in GARBAGE:
            ack = await sam.call("signal", message)
            assert ack["ok"] is False and ack["error"]["code"] in ("invalid", "not_found", "limit"), (message, ack)
            assert ack["error"]["detail"], message
        assert not [r for r in quiet_log.records if r.exc_info or "Traceback" in r.getMessage()]
    finally:
        await lobby.close()

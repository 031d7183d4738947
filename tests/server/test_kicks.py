"""A kick bans the person's way in, not one invite; a room can be locked against new joins; a role link is
exchanged for a personal invite, so that two people who open it are two participants.

Real socket.io clients against a real server (hubtools), several participants at once.
"""

from __future__ import annotations

import pytest
import socketio
from hubtools import Lobby, RoomClient, admin, until

from server.appkeys import HUB


async def redeem(lobby: Lobby, code: str, name: str):
    return await lobby.http.post("/api/join", json={"code": code, "name": name})


async def exchange(lobby: Lobby, token: str, name: str):
    return await lobby.http.post("/api/invites/exchange", json={"token": token, "name": name})


async def refused(client: RoomClient) -> dict:
    """Connect and expect a refusal; its connect_error data."""
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect()
    return client.refusal


async def test_a_kick_replaces_the_role_link_and_code_and_refuses_every_old_way_in(aiohttp_server, tmp_path):
    lobby = await Lobby.open(aiohttp_server, tmp_path / "d", mode="training")
    try:
        invites = lobby.created["invites"]
        old_code, old_link = invites["student"]["code"], invites["student"]["token"]
        ines = await lobby.client("instructor", token=invites["instructor"]["token"])
        # Stu comes in by the room code, Sue by the student role link (exchanged for a personal invite), Sam is
        # a surgeon with a personal invite.
        r = await redeem(lobby, old_code, "Stu")
        assert r.status == 201, await r.text()
        stu_invite = (await r.json())["token"]
        r = await exchange(lobby, old_link, "Sue")
        assert r.status == 201, await r.text()
        sue_invite = (await r.json())["token"]
        assert sue_invite != old_link
        stu = await lobby.client("student", token=stu_invite)
        sue = await lobby.client("student", token=sue_invite)
        sam = await lobby.client("surgeon", "Sam")
        assert len({stu.you["id"], sue.you["id"], sam.you["id"], ines.you["id"]}) == 4

        ack = await ines.op("participant.kick", participant=stu.you["id"])
        assert ack["ok"], ack
        await until(lambda: stu.disconnected.is_set(), "the kicked student's socket closing")
        await until(lambda: any(name == "invites" for name, _ in ines.other), "the new invites for the instructor")
        (replaced,) = [data for name, data in ines.other if name == "invites"]
        assert replaced["role"] == "student" and replaced["code"] not in (None, old_code)
        new_link = replaced["link"].split("invite=")[1]
        assert new_link != old_link

        # Every old way in is refused: the code, the shared link (socket, HTTP and exchange), the personal invite.
        assert (await redeem(lobby, old_code, "Stu again")).status == 404
        assert (await exchange(lobby, old_link, "Stu again")).status == 404
        assert "replaced" in (await refused(RoomClient(lobby.url, old_link)))["message"]
        assert (await lobby.http.get(f"/api/rooms/{lobby.id}", headers={"Authorization": f"Bearer {old_link}"})
                ).status == 403
        assert "removed" in (await refused(RoomClient(lobby.url, stu_invite)))["message"]

        # Everyone else is unaffected: Sue (whose invite came from the old link) and Sam stay and keep working.
        assert not sue.disconnected.is_set() and not sam.disconnected.is_set()
        assert (await sue.op("annotation.create", type="point", position=[1, 2, 3]))["ok"]
        assert (await sam.op("annotation.create", type="point", position=[4, 5, 6]))["ok"]
        await lobby.settle()

        # The new code and the new link work, for new people.
        r = await redeem(lobby, replaced["code"], "Newcomer")
        assert r.status == 201, await r.text()
        assert (await exchange(lobby, new_link, "Another")).status == 201
        admin_view = await (await lobby.http.get(f"/api/rooms/{lobby.id}", headers=admin(lobby.app))).json()
        assert admin_view["invites"]["student"]["code"] == replaced["code"]
        assert admin_view["invites"]["student"]["token"] == new_link
    finally:
        await lobby.close()


async def test_a_room_locked_against_joins_keeps_its_people_and_refuses_newcomers(aiohttp_server, tmp_path):
    lobby = await Lobby.open(aiohttp_server, tmp_path / "d", mode="training")
    try:
        invites = lobby.created["invites"]
        ines = await lobby.client("instructor", token=invites["instructor"]["token"])
        stu_token = (await (await redeem(lobby, invites["student"]["code"], "Stu")).json())["token"]
        stu = await lobby.client("student", token=stu_token)
        assert (await stu.op("room.lock_joins"))["error"]["code"] == "forbidden"
        assert (await ines.op("room.lock_joins"))["ok"]
        await lobby.settle()
        assert stu.state.joins_locked and stu.state.snapshot()["state"]["locks"]["joins"]

        r = await redeem(lobby, invites["student"]["code"], "Late")
        assert r.status == 409 and "locked" in (await r.json())["detail"]
        assert (await exchange(lobby, invites["student"]["token"], "Late")).status == 409
        stranger = await lobby.token("student", "Stranger")  # minted earlier by the admin, never used
        assert "locked" in (await refused(RoomClient(lobby.url, stranger)))["message"]

        await stu.close()  # someone the room knows may come back
        await until(lambda: not lobby.live.room.participant(stu.you["id"]).present, "Stu's leave")
        back = await lobby.client("student", token=stu_token)
        assert back.you["id"] == stu.you["id"]

        assert (await ines.op("room.unlock_joins"))["ok"]
        assert (await redeem(lobby, invites["student"]["code"], "Late")).status == 201
    finally:
        await lobby.close()


async def test_two_people_who_open_one_role_link_are_two_participants(aiohttp_server, tmp_path):
    lobby = await Lobby.open(aiohttp_server, tmp_path / "d", mode="consult")
    try:
        link = lobby.created["invites"]["surgeon"]["token"]
        first = (await (await exchange(lobby, link, "Dr Ada")).json())
        second = (await (await exchange(lobby, link, "Dr Bo")).json())
        assert first["role"] == second["role"] == "surgeon" and first["token"] != second["token"]
        a = await lobby.client("surgeon", token=first["token"])
        b = await lobby.client("surgeon", token=second["token"])
        assert a.you["id"] != b.you["id"] and {a.you["name"], b.you["name"]} == {"Dr Ada", "Dr Bo"}
        # Muting one mutes only that one.
        ines = await lobby.client("instructor")
        assert (await ines.op("participant.mute", participant=a.you["id"], muted=True))["ok"]
        assert (await b.op("annotation.create", type="point", position=[0, 0, 0]))["ok"]
        assert (await a.op("annotation.create", type="point", position=[0, 0, 0]))["error"]["code"] == "forbidden"
        # A personal invite is not a role link: it cannot be exchanged again; nor can garbage.
        assert (await exchange(lobby, first["token"], "Copy")).status == 404
        assert (await exchange(lobby, "é.x", "Copy")).status == 404
        assert lobby.app[HUB].rooms[lobby.id].room.participant(a.you["id"]).muted
    finally:
        await lobby.close()

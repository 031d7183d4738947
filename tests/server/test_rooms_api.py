"""The rooms HTTP API: create (validated against the catalog), invites, codes and QR codes, the scope of an
invite token, room views, close, the ordered log, and the invite key on disk."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import segno
from hubtools import BONE, FOREIGN, OTHER_STUDY, SKIN, STUDY, RoomClient, admin, create_room, start, until

from server.appkeys import HUB, METRICS, SETTINGS
from server.services.invites import InviteError, InviteSigner, normalise_code
from sessions.events import Event
from sessions.ledger.tree import MemoryNodeStore, MerkleLog


@pytest.fixture
async def api(aiohttp_server, tmp_path):
    """(app, http session, base URL) of a running server with a seeded catalog."""
    import aiohttp

    _, app, url = await start(aiohttp_server, tmp_path / "data")
    async with aiohttp.ClientSession(url) as http:
        yield app, http, url


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---- creating a room -----------------------------------------------------------------------------------

async def test_creating_a_room_returns_one_invite_per_role(api):
    app, http, _ = api
    body = await create_room(http, app, "training", meshes=(BONE,), title="Temporal bone, left",
                             names={"instructor": "Dr Ines Moreau"})
    room = body["room"]
    assert room["mode"] == "training" and room["title"] == "Temporal bone, left"
    assert room["study_id"] == STUDY and room["mesh_ids"] == [BONE] and room["closed"] is False
    assert room["seq"] == 2 and room["participants"] == [] and room["present"] == 0  # room.open, mesh.provenance
    invites = body["invites"]
    assert list(invites) == ["instructor", "surgeon", "student", "observer"]
    signer = app[HUB].invites
    base = app[SETTINGS].base_url
    for role, invite in invites.items():
        parsed = signer.verify(invite["token"])
        assert (parsed.room, parsed.role.value) == (room["id"], role)
        assert invite["link"] == f"{base}/?invite={invite['token']}"
        assert invite["qr"] == f"/api/rooms/{room['id']}/invites/{role}.png"
        assert invite["expires_at"] == parsed.exp > time.time() + 3600
    assert invites["instructor"]["name"] == "Dr Ines Moreau" and invites["observer"]["name"] == "Observer"
    # codes only for the roles configured (student and observer by default): a guessed code gives no power
    assert invites["instructor"]["code"] is None and invites["surgeon"]["code"] is None
    codes = {invites["student"]["code"], invites["observer"]["code"]}
    assert len(codes) == 2 and all(len(c) == 8 and c.isdigit() for c in codes)
    consult = await create_room(http, app, "consult")
    assert [invite["code"] for invite in consult["invites"].values()] == [None] * 4  # identifiable: no codes
    # the same invites (same tokens) come back to the admin
    again = await (await http.get(f"/api/rooms/{room['id']}", headers=admin(app))).json()
    assert again["invites"] == invites


BAD_ROOMS = [
    ({"study_id": "st-nope", "mesh_ids": [BONE], "mode": "consult"}, 404, "not_found"),
    ({"study_id": STUDY, "mesh_ids": ["m-nope"], "mode": "consult"}, 404, "not_found"),
    ({"study_id": STUDY, "mesh_ids": [FOREIGN], "mode": "consult"}, 400, "bad_parameter"),
    ({"study_id": STUDY, "mesh_ids": [BONE, SKIN], "mode": "training"}, 422, "identifying_mesh"),
    ({"study_id": STUDY, "mesh_ids": [BONE], "mode": "lecture"}, 400, "bad_parameter"),
    ({"study_id": STUDY, "mesh_ids": [], "mode": "consult"}, 400, "bad_parameter"),
    ({"study_id": STUDY, "mesh_ids": BONE, "mode": "consult"}, 400, "bad_parameter"),
    ({"mesh_ids": [BONE], "mode": "consult"}, 400, "bad_parameter"),
    ({"study_id": STUDY, "mesh_ids": [BONE], "mode": "consult", "title": "a\u0007b"}, 400, "bad_parameter"),
    ({"study_id": STUDY, "mesh_ids": [BONE], "mode": "consult", "title": "x" * 201}, 400, "bad_parameter"),
    ({"study_id": STUDY, "mesh_ids": [BONE], "mode": "consult", "names": {"dean": "X"}}, 400, "bad_parameter"),
    ({"study_id": STUDY, "mesh_ids": [BONE], "mode": "consult", "names": {"student": ""}}, 400, "bad_parameter"),
    ({"study_id": STUDY, "mesh_ids": [BONE], "mode": "consult", "owner": "me"}, 400, "bad_parameter"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_ROOMS)
async def test_a_bad_room_request_is_refused_and_creates_nothing(api, body, status, code):
    app, http, _ = api
    response = await http.post("/api/rooms", json=body, headers=admin(app))
    assert response.status == status, await response.text()
    assert (await response.json())["error"] == code
    assert (await (await http.get("/api/rooms", headers=admin(app))).json())["rooms"] == []
    assert app[METRICS].rooms._value.get() == 0


async def test_a_consult_room_may_show_the_skin_and_the_study_stays_pseudonymous(api):
    app, http, _ = api
    body = await create_room(http, app, "consult", meshes=(BONE, SKIN))
    assert body["room"]["mesh_ids"] == [BONE, SKIN]
    text = await (await http.get(f"/api/rooms/{body['room']['id']}", headers=admin(app))).text()
    assert "HEAD CT" not in text  # the study's description stays in the catalog


async def test_rooms_need_the_admin_token(api):
    app, http, _ = api
    body = await create_room(http, app)
    student = body["invites"]["student"]["token"]
    room = body["room"]["id"]
    for method, path in (("POST", "/api/rooms"), ("GET", "/api/rooms"), ("POST", f"/api/rooms/{room}/close"),
                         ("POST", f"/api/rooms/{room}/invites"), ("GET", f"/api/rooms/{room}/invites/student.png")):
        assert (await http.request(method, path)).status == 401
        assert (await http.request(method, path, headers=bearer(student))).status == 403, path


# ---- the scope of an invite ----------------------------------------------------------------------------

async def test_an_invite_reads_its_own_room_and_meshes_only(api):
    app, http, _ = api
    mine = await create_room(http, app, meshes=(BONE,))
    other = await create_room(http, app, meshes=(SKIN,))
    token = mine["invites"]["observer"]["token"]
    response = await http.get(f"/api/meshes/{BONE}.glb", headers=bearer(token))
    assert response.status == 200 and (await response.read())[:4] == b"glTF"
    assert (await http.head(f"/api/meshes/{BONE}.glb", headers=bearer(token))).status == 200
    for path in (f"/api/meshes/{SKIN}.glb", f"/api/meshes/{FOREIGN}.glb", f"/api/meshes/{BONE}",
                 f"/api/rooms/{other['room']['id']}", f"/api/rooms/{other['room']['id']}/events",
                 f"/api/studies/{STUDY}", "/api/studies", f"/api/studies/{OTHER_STUDY}/meshes"):
        assert (await http.get(path, headers=bearer(token))).status == 403, path
    view = await http.get(f"/api/rooms/{mine['room']['id']}", headers=bearer(token))
    assert view.status == 200
    assert "invites" not in await view.json()  # only the admin gets the room's invites back
    assert (await http.get(f"/api/rooms/{mine['room']['id']}/events", headers=bearer(token))).status == 200


async def test_an_expired_or_forged_invite_reads_nothing(api):
    app, http, _ = api
    body = await create_room(http, app)
    room = body["room"]["id"]
    signer = app[HUB].invites
    expired = signer.issue(room, "surgeon", "Late", int(time.time()) - 1)
    forged = InviteSigner(b"k" * 32).issue(room, "surgeon", "Mallory", int(time.time()) + 600)
    for token in (expired, forged, "x.y", "é"):
        assert (await http.get(f"/api/meshes/{BONE}.glb", headers=bearer(token))).status == 403
        assert (await http.get(f"/api/rooms/{room}", headers=bearer(token))).status == 403


def test_invite_tokens_are_signed_compact_and_expire():
    signer = InviteSigner(b"s" * 32)
    token = signer.issue("rm1", "student", "Sam Okafor", 2_000)
    invite = signer.verify(token, now=1_999)
    assert (invite.room, invite.role.value, invite.name, invite.exp) == ("rm1", "student", "Sam Okafor", 2_000)
    assert len(invite.nonce) == 16 and token.count(".") == 1 and len(token) < 250
    with pytest.raises(InviteError, match="expired"):
        signer.verify(token, now=2_000)
    payload, mac = token.split(".")
    with pytest.raises(InviteError, match="signature"):
        InviteSigner(b"t" * 32).verify(token, now=0)
    with pytest.raises(InviteError):
        signer.verify(payload + "." + mac[:-1], now=0)
    with pytest.raises(InviteError):
        signer.verify("x" * 5000, now=0)
    assert signer.issue("rm1", "student", "A", 9, nonce="n") == signer.issue("rm1", "student", "A", 9, nonce="n")
    assert signer.role_nonce("rm1", "student") != signer.role_nonce("rm1", "observer")
    for room, role, name in (("r m", "student", "A"), ("rm1", "dean", "A"), ("rm1", "student", " "),
                             ("rm1", "student", "two\nlines"), ("rm1", "student", "x" * 65)):
        with pytest.raises(InviteError):
            signer.issue(room, role, name, 9)


async def test_the_invite_key_is_private_and_survives_a_restart(aiohttp_server, tmp_path):
    import aiohttp

    server, app, url = await start(aiohttp_server, tmp_path / "data")
    key = tmp_path / "data" / "invite-key"
    assert key.stat().st_mode & 0o777 == 0o600
    async with aiohttp.ClientSession(url) as http:
        token = (await create_room(http, app))["invites"]["student"]["token"]
    await server.close()  # one server per data folder: the room database is locked while it runs
    _, again, url = await start(aiohttp_server, tmp_path / "data")
    assert again[HUB].invites.verify(token).role.value == "student"


# ---- QR codes ------------------------------------------------------------------------------------------

def qr_modules(png: bytes) -> np.ndarray:
    """The QR modules of a segno PNG (scale 6, 4-module quiet zone) as a boolean matrix (True = dark)."""
    from skimage import io as skio

    image = skio.imread(io.BytesIO(png))
    gray = image if image.ndim == 2 else image[..., 0]
    dark = gray < (int(gray.min()) + int(gray.max())) / 2
    size = dark.shape[0] // 6 - 8
    return dark[24 + 3::6, 24 + 3::6][:size, :size]


async def test_the_qr_code_encodes_the_invite_link(api):
    app, http, _ = api
    body = await create_room(http, app)
    room = body["room"]["id"]
    for role in ("instructor", "student"):
        response = await http.get(f"/api/rooms/{room}/invites/{role}.png", headers=admin(app))
        assert response.status == 200 and response.content_type == "image/png"
        assert response.headers["Cache-Control"] == "no-store"
        png = await response.read()
        expected = np.array(segno.make(body["invites"][role]["link"], error="m", micro=False).matrix, bool)
        assert np.array_equal(qr_modules(png), expected)
    assert (await http.get(f"/api/rooms/{room}/invites/dean.png", headers=admin(app))).status == 404
    assert (await http.get("/api/rooms/rm-nope/invites/student.png", headers=admin(app))).status == 404
    await http.post(f"/api/rooms/{room}/close", headers=admin(app))
    assert (await http.get(f"/api/rooms/{room}/invites/student.png", headers=admin(app))).status == 409


# ---- room codes ----------------------------------------------------------------------------------------

async def test_a_room_code_gives_each_person_their_own_invite(api):
    app, http, url = api
    body = await create_room(http, app, "training")
    code = body["invites"]["student"]["code"]
    tokens = []
    for name, typed in (("Ada", code), ("Ben", f"{code[:4]} {code[4:]}"), ("Cy", f"{code[:4]}-{code[4:]}")):
        response = await http.post("/api/join", json={"code": typed, "name": name})
        assert response.status == 201, await response.text()
        joined = await response.json()
        assert (joined["room"], joined["role"], joined["name"]) == (body["room"]["id"], "student", name)
        assert joined["link"].endswith(joined["token"]) and joined["code"] is None
        tokens.append(joined["token"])
    clients = [await RoomClient(url, token).connect() for token in tokens]
    await until(lambda: all(c.you for c in clients), "three snapshots")
    assert len({c.you["id"] for c in clients}) == 3  # three participants, not one
    assert [c.you["name"] for c in clients] == ["Ada", "Ben", "Cy"]
    for client in clients:
        await client.close()


async def test_bad_or_dead_codes_are_refused(api):
    app, http, _ = api
    body = await create_room(http, app, "training")
    code = body["invites"]["observer"]["code"]
    wrong = f"{(int(code) + 1) % 10**8:08d}"
    cases = [({"code": wrong, "name": "A"}, 404), ({"code": "1234", "name": "A"}, 400),
             ({"code": code, "name": ""}, 400), ({"code": code}, 400), ({"code": code, "name": "A", "role": "x"}, 400),
             ({"code": True, "name": "A"}, 400)]
    for payload, status in cases:
        assert (await http.post("/api/join", json=payload)).status == status, payload
    await http.post(f"/api/rooms/{body['room']['id']}/close", headers=admin(app))
    assert (await http.post("/api/join", json={"code": code, "name": "A"})).status == 404  # closed room


async def test_redeeming_codes_is_throttled(aiohttp_server, tmp_path):
    import aiohttp

    _, _, url = await start(aiohttp_server, tmp_path / "data", join_rate=2.0)
    async with aiohttp.ClientSession(url) as http:
        statuses = [(await http.post("/api/join", json={"code": "00000000", "name": "A"})).status
                    for _ in range(4)]
        assert statuses == [404, 404, 429, 429]  # a minute's worth, then wait
        response = await http.post("/api/join", json={"code": "00000000", "name": "A"})
        assert response.headers["Retry-After"] == "30" and (await response.json())["error"] == "too_many_requests"


def test_codes_are_eight_digits():
    assert normalise_code("1234 5678") == "12345678" == normalise_code(12345678)
    for bad in ("1234567", "123456789", "abcdefgh", "١٢٣٤٥٦٧٨", None, True):
        with pytest.raises(InviteError):
            normalise_code(bad)


# ---- personal invites, views, close, the log -----------------------------------------------------------

async def test_the_admin_mints_personal_invites(api):
    app, http, _ = api
    room = (await create_room(http, app))["room"]["id"]
    response = await http.post(f"/api/rooms/{room}/invites", json={"role": "surgeon", "name": "Dr B", "ttl": 600},
                               headers=admin(app))
    assert response.status == 201
    invite = await response.json()
    assert invite["role"] == "surgeon" and invite["qr"] is None and invite["code"] is None
    assert time.time() + 500 < invite["expires_at"] <= time.time() + 600
    for bad in ({"role": "dean", "name": "X"}, {"role": "surgeon"}, {"role": "surgeon", "name": "X", "ttl": 5},
                {"role": "surgeon", "name": "X", "ttl": "1h"}, {"role": "surgeon", "name": "X", "extra": 1}):
        assert (await http.post(f"/api/rooms/{room}/invites", json=bad, headers=admin(app))).status == 400
    assert (await http.post("/api/rooms/rm-nope/invites", json={"role": "surgeon", "name": "X"},
                            headers=admin(app))).status == 404


async def test_the_room_view_summarises_participants_and_state(api):
    app, http, url = api
    body = await create_room(http, app)
    room = body["room"]["id"]
    ines = await RoomClient(url, body["invites"]["instructor"]["token"]).connect()
    await until(lambda: ines.you, "the snapshot")
    for op in ({"kind": "annotation.create", "type": "point", "position": [1, 2, 3]},
               {"kind": "annotation.create", "type": "note", "text": "Stay anterior."},
               {"kind": "annotation.create", "type": "point", "position": [4, 5, 6]},
               {"kind": "clip.set", "plane": {"normal": [0, 1, 0], "constant": 0}},
               {"kind": "room.lock"}, {"kind": "follow.start"}):
        assert (await ines.call("op", op))["ok"]
    view = await (await http.get(f"/api/rooms/{room}", headers=admin(app))).json()
    assert view["present"] == 1 and [p["name"] for p in view["participants"]] == ["Instructor"]
    assert view["summary"]["annotations"] == {"note": 1, "point": 2}
    assert view["summary"]["clip_planes"] == 1 and view["summary"]["locked"] is True
    assert view["summary"]["follow"] == ines.you["id"]
    assert view["seq"] == app[HUB].rooms[room].room.seq and view["head"] == app[HUB].rooms[room].room.head
    listed = (await (await http.get("/api/rooms", headers=admin(app))).json())["rooms"]
    assert [r["id"] for r in listed] == [room] and "participants" not in listed[0]
    await ines.close()


async def test_closing_twice_is_a_conflict(api):
    app, http, _ = api
    room = (await create_room(http, app))["room"]["id"]
    first = await http.post(f"/api/rooms/{room}/close", headers=admin(app))
    assert first.status == 200 and (await first.json())["closed"] is True
    assert (await http.post(f"/api/rooms/{room}/close", headers=admin(app))).status == 409
    assert (await http.post("/api/rooms/rm-nope/close", headers=admin(app))).status == 404
    log = await (await http.get(f"/api/rooms/{room}/events", headers=admin(app))).json()
    assert [e["kind"] for e in log["events"]] == ["room.open", "mesh.provenance", "room.close"]


async def test_the_log_pages_in_order_and_folds_to_the_head(api):
    app, http, url = api
    body = await create_room(http, app)
    room = body["room"]["id"]
    ines = await RoomClient(url, body["invites"]["instructor"]["token"]).connect()
    await until(lambda: ines.you, "the snapshot")
    for x in range(6):
        await ines.call("op", {"kind": "annotation.create", "type": "point", "position": [x, 0, 0]})
    await ines.close()
    live = app[HUB].rooms[room].room
    await until(lambda: live.seq == 10, "the leave")  # open, provenance, join, 6 ops, leave
    whole = await (await http.get(f"/api/rooms/{room}/events", headers=admin(app))).json()
    events = [Event.from_wire(room, e) for e in whole["events"]]
    assert [e.seq for e in events] == list(range(1, 11)) and whole["next"] is None
    tree = MerkleLog(MemoryNodeStore())
    for event in events:
        tree.append(bytes.fromhex(event.hash))
    assert tree.root().hex() == whole["head"] == live.head and whole["seq"] == 10
    page = await (await http.get(f"/api/rooms/{room}/events?from=2&to=5", headers=admin(app))).json()
    assert [e["seq"] for e in page["events"]] == [3, 4, 5] and page["next"] is None
    assert (await (await http.get(f"/api/rooms/{room}/events?from=10", headers=admin(app))).json())["events"] == []
    for query in ("from=-1", "from=x", "from=5&to=2", "to=1.5"):
        response = await http.get(f"/api/rooms/{room}/events?{query}", headers=admin(app))
        assert response.status == 400, query
    assert (await http.get("/api/rooms/rm-nope/events", headers=admin(app))).status == 404

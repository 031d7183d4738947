"""HTTP handlers of rooms: create one (with its invites, codes and QR codes), list, inspect, close, and read
the ordered log. Invites are server/api/invites.py; the socket side of rooms is server/services/hub.py.

Room views are de-identified like the rest of the API: the study appears only as its pseudonymous id, with
the room's own title. Training rooms refuse skin surfaces: a skin surface can show the patient's face.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiohttp import web

from server.api.errors import ApiError, found
from server.api.params import query_int, read_json
from server.appkeys import CATALOG, HUB, SETTINGS
from server.middleware.auth import is_admin
from server.services.hub import Hub, LiveRoom
from server.services.invites import InviteError, display_name, invite_link
from server.services.provenance import mesh_provenance
from sessions.log import LogError
from sessions.ops import OpError
from sessions.roles import Role
from sessions.room import RoomMode

DEFAULT_NAMES = {Role.INSTRUCTOR: "Instructor", Role.SURGEON: "Surgeon", Role.STUDENT: "Student",
                 Role.OBSERVER: "Observer"}
MAX_MESHES = 32
MAX_EVENTS = 10_000  # per page of GET /api/rooms/{id}/events
IDENTIFYING_PRESETS = frozenset({"skin"})


# -- views --------------------------------------------------------------------------------------------------
def room_view(live: LiveRoom, *, detail: bool) -> dict[str, Any]:
    """A room as the API shows it; `detail` adds participants and a summary of the shared state."""
    room = live.room
    state = room.state
    view: dict[str, Any] = {
        "id": room.id,
        "mode": state.room["mode"],
        "title": state.room["title"],
        "study_id": state.room["study"],
        "mesh_ids": list(state.room["meshes"]),
        "closed": room.closed,
        "created_at": live.record.created_at / 1000,
        "seq": room.seq,
        "head": room.head,
        "present": len(live.present()),
    }
    if detail:
        view["participants"] = [{**p.to_json(), "present": p.present and p.id not in live.unlogged_leaves}
                                for p in state.participants.values()]
        view["summary"] = {
            "annotations": dict(sorted(Counter(a.type.value for a in state.annotations.values()).items())),
            "clip_planes": len(state.clips),
            "slice_planes": len(state.slices),
            "locked": state.locked,
            "joins_locked": state.joins_locked,
            "follow": state.follow,
            "model": state.model.to_json(),
            "structures": len(state.structures),
        }
    return view


def invite_view(request: web.Request, live: LiveRoom, role: Role, name: str, token: str, exp: int, *,
                code: str | None = None, qr: bool = False) -> dict[str, Any]:
    """An invite as the API hands it out: the token, its link, and for a role invite its code and QR image."""
    return {
        "role": role.value,
        "name": name,
        "token": token,
        "link": invite_link(request.app[SETTINGS].base_url, token),
        "code": code,
        "qr": f"/api/rooms/{live.id}/invites/{role.value}.png" if qr else None,
        "expires_at": exp,
    }


def role_invites(request: web.Request, hub: Hub, live: LiveRoom) -> dict[str, dict[str, Any]]:
    """The room's invite for each role, with its code (for the roles that have one) and QR image URL."""
    codes = hub.db.codes_of(live.id)
    invites = {}
    for role in Role:
        token, exp = hub.role_invite(live, role)
        code = codes.get(role)
        invites[role.value] = invite_view(request, live, role, live.record.names[role.value], token, exp,
                                          code=code.code if code else None, qr=True)
    return invites


def room_or_404(request: web.Request, *, serve: bool = False) -> LiveRoom:
    """The room of the path, as stored now (`serve`: served by this process from now on, to write to it)."""
    room_id = request.match_info["room_id"]
    hub = request.app[HUB]
    try:
        live = hub.take(room_id) if serve else hub.view(room_id)
    except LogError as error:
        raise ApiError(503, "unavailable", f"room {room_id} cannot be read now: {error}") from None
    return found(live, "room", room_id)


def role_or_400(value: Any) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"role must be one of {[r.value for r in Role]}") from None


def display_name_or_400(value: Any) -> str:
    try:
        return display_name(value)
    except InviteError as e:
        raise ApiError(400, "bad_parameter", str(e)) from None


# -- rooms --------------------------------------------------------------------------------------------------
def _room_body(body: dict) -> tuple[str, list[str], RoomMode, str, dict[Role, str]]:
    """(study_id, mesh_ids, mode, title, names) of a POST /api/rooms body, or a 400 ApiError."""
    unknown = set(body) - {"study_id", "mesh_ids", "mode", "title", "names"}
    if unknown:
        raise ApiError(400, "bad_parameter", f"unknown field(s): {', '.join(sorted(unknown))}")
    study_id = body.get("study_id")
    if not isinstance(study_id, str) or not study_id:
        raise ApiError(400, "bad_parameter", "study_id must be a study id")
    mesh_ids = body.get("mesh_ids")
    if (not isinstance(mesh_ids, list) or not 1 <= len(mesh_ids) <= MAX_MESHES
            or not all(isinstance(m, str) and m for m in mesh_ids)):
        raise ApiError(400, "bad_parameter", f"mesh_ids must be a list of 1 to {MAX_MESHES} mesh ids")
    try:
        mode = RoomMode(body.get("mode"))
    except ValueError:
        raise ApiError(400, "bad_parameter", 'mode must be "consult" or "training"') from None
    title = body.get("title", "")
    if not isinstance(title, str):
        raise ApiError(400, "bad_parameter", "title must be a string")
    names = body.get("names", {})
    if not isinstance(names, dict):
        raise ApiError(400, "bad_parameter", "names must map roles to display names")
    chosen = {role_or_400(role): display_name_or_400(name) for role, name in names.items()}
    return study_id, list(dict.fromkeys(mesh_ids)), mode, title, {**DEFAULT_NAMES, **chosen}


async def create_room(request: web.Request) -> web.Response:
    study_id, mesh_ids, mode, title, names = _room_body(await read_json(request))
    catalog = request.app[CATALOG]
    found(catalog.study(study_id), "study", study_id)
    for mesh_id in mesh_ids:
        mesh = found(catalog.mesh(mesh_id), "mesh", mesh_id)
        if mesh["study_id"] != study_id:
            raise ApiError(400, "bad_parameter", f"mesh {mesh_id} is not a mesh of study {study_id}")
        if mode is RoomMode.TRAINING and mesh["preset"] in IDENTIFYING_PRESETS:
            raise ApiError(422, "identifying_mesh", f"mesh {mesh_id} is a {mesh['preset']} surface, which "
                           "can show the patient's face: training rooms take de-identified data only")
    structures = []
    for mesh_id in mesh_ids:
        segmentation_id = catalog.mesh(mesh_id).get("segmentation_id")
        segmentation = catalog.segmentation(segmentation_id) if segmentation_id else None
        for s in segmentation["structures"] if segmentation else ():
            structures.append({"id": f"{mesh_id}:{s['number']}", "mesh": mesh_id, "name": s["name"],
                               "color": s["color"], "volume_ml": s["volume_ml"]})
    hub = request.app[HUB]
    try:
        live = hub.create_room(mode, title, study_id, mesh_ids, names, mesh_provenance(catalog, mesh_ids),
                               tuple(structures))
    except OpError as e:
        raise ApiError(400, "bad_parameter", e.detail) from None
    body = {"room": room_view(live, detail=True), "invites": role_invites(request, hub, live)}
    return web.json_response(body, status=201, headers={"Location": f"/api/rooms/{live.id}"})


async def list_rooms(request: web.Request) -> web.Response:
    try:
        rooms = [room_view(live, detail=False) for live in request.app[HUB].every_room()]
    except LogError as error:
        raise ApiError(503, "unavailable", f"the rooms cannot be read now: {error}") from None
    return web.json_response({"rooms": rooms})


async def get_room(request: web.Request) -> web.Response:
    """Admin or an invite of this room; only the admin also gets the room's invites back."""
    live = room_or_404(request)
    view = room_view(live, detail=True)
    if is_admin(request):
        view["invites"] = role_invites(request, request.app[HUB], live)
    return web.json_response(view)


async def close_room(request: web.Request) -> web.Response:
    live = room_or_404(request, serve=True)
    if live.room.closed:
        raise ApiError(409, "conflict", f"room {live.id} is already closed")
    await request.app[HUB].close_room(live)
    return web.json_response(room_view(live, detail=True))


# -- the log ------------------------------------------------------------------------------------------------
async def get_events(request: web.Request) -> web.Response:
    """The ordered log: events with from < seq <= to, at most MAX_EVENTS per page (`next` continues)."""
    live = room_or_404(request)
    request.app[HUB].flush()  # the log as committed
    room = live.room
    after = query_int(request, "from", default=0)
    until = min(query_int(request, "to", default=room.seq), room.seq)
    if until < after:
        raise ApiError(400, "bad_parameter", "to must be >= from")
    last = min(until, after + MAX_EVENTS)
    events = [event.to_wire() for event in room.events_since(after, last)]
    return web.json_response({"room": room.id, "seq": room.seq, "head": room.head, "events": events,
                              "next": last if last < until else None})


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/rooms", create_room),
        web.get("/api/rooms", list_rooms),
        web.get("/api/rooms/{room_id}", get_room),
        web.post("/api/rooms/{room_id}/close", close_room),
        web.get("/api/rooms/{room_id}/events", get_events),
    ]

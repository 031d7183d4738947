"""A consult room over a real CT (the Philips phantom's regular series), with every kind of annotation made by
real clients over socket.io, edited and deleted, and its consult record (DICOM SR) and ledger bundle.

`consult(aiohttp_server, data)` returns a `Consult`: the running server and app, the room, its events, the
source series' headers, the SR bytes and the bundle bytes. The mesh row points at the real series with a
stand-in GLB (the record needs the series, not the surface).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pydicom
from conftest import DICOM, require_path
from hubtools import GLB, RoomClient, admin, settings, until

from server.app import build_app
from server.appkeys import ARTIFACTS, CATALOG, LIBRARY
from server.services.imports import import_folder

REGULAR = DICOM / "ct-head-phantom-philips" / "DICOM" / "S21570" / "S2010"
MESH = "m-record-bone"
LABEL = "Ventrikel — links, é"  # a label outside Latin-1: the record is UTF-8


@dataclass
class Consult:
    server: Any
    app: Any
    url: str
    http: aiohttp.ClientSession
    room: str
    study: str
    headers: list[pydicom.Dataset]

    async def get(self, path: str) -> aiohttp.ClientResponse:
        return await self.http.get(path, headers=admin(self.app))

    async def events(self) -> list[dict]:
        return (await (await self.get(f"/api/rooms/{self.room}/events")).json())["events"]

    async def report(self) -> bytes:
        response = await self.get(f"/api/rooms/{self.room}/report.dcm")
        assert response.status == 200, await response.text()
        return await response.read()

    async def bundle(self) -> bytes:
        response = await self.get(f"/api/rooms/{self.room}/export")
        assert response.status == 200, await response.text()
        return await response.read()

    async def new_room(self, mode: str = "consult") -> dict:
        body = {"study_id": self.study, "mesh_ids": [MESH], "mode": mode, "title": "Record"}
        response = await self.http.post("/api/rooms", json=body, headers=admin(self.app))
        assert response.status == 201, await response.text()
        return await response.json()


async def start_consult(aiohttp_server, data: Path, **overrides: Any) -> Consult:
    """A running server whose library holds the phantom's regular series, with a mesh row over it, and a consult
    room over that mesh."""
    app = build_app(settings(data, **overrides))
    result = import_folder(app[LIBRARY], require_path(REGULAR, "the Philips phantom"))
    study, series = result["study_id"], result["series"][0]["id"]
    digest = app[ARTIFACTS].put_bytes(GLB, ".glb")
    app[CATALOG].add_mesh({"id": MESH, "study_id": study, "series_id": series, "preset": "bone",
                           "threshold": 300.0, "triangles": 10, "vertices": 8,
                           "bbox_lps_mm": [[0, 0, 0], [1, 1, 1]], "artifacts": {"draco": digest}})
    server = await aiohttp_server(app, shutdown_timeout=0.5)
    url = str(server.make_url("")).rstrip("/")
    http = aiohttp.ClientSession(url)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(REGULAR.iterdir()) if p.name != "DIRFILE"]
    consult = Consult(server, app, url, http, "", study, headers)
    consult.room = (await consult.new_room())["room"]["id"]
    return consult


async def make_annotations(consult: Consult, room: str | None = None) -> dict[str, str]:
    """Every kind of annotation, from two participants, with edits and a delete; returns label -> annotation id
    of those alive at the end. Leaves both clients disconnected."""
    room = room or consult.room
    invites = {}
    for role, name in (("instructor", "Dr Ines Moreau"), ("surgeon", "Sam Okafor")):
        response = await consult.http.post(f"/api/rooms/{room}/invites", json={"role": role, "name": name},
                                           headers=admin(consult.app))
        invites[role] = (await response.json())["token"]
    ines = RoomClient(consult.url, invites["instructor"])
    sam = RoomClient(consult.url, invites["surgeon"])
    ines.room = sam.room = room
    await ines.connect()
    await sam.connect()
    await until(lambda: ines.you and sam.you, "both snapshots")
    ids = {}

    async def make(client: RoomClient, key: str, **op: Any) -> str:
        ack = await client.op("annotation.create", **op)
        assert ack["ok"], ack
        ids[key] = f"a{ack['seq']}"
        return ids[key]

    await make(ines, "point", type="point", position=[-32.5, 14.0, 61.25], label="round window")
    await make(sam, "measurement", type="measurement", a=[0, 0, 0], b=[3, 4, 12], label="cochlear height")
    await make(ines, "stroke", type="stroke", points=[[-30, 10, 60], [-31.5, 11, 60.5], [-33, 12.5, 61.1]],
               label="approach")
    await make(sam, "note", type="note", text="Facial nerve runs just above.\nStay anterior.",
               position=[-35.0, 9.5, 63.0])
    await make(ines, "free note", type="note", text="Plan: CT follow-up in 6 weeks")
    await make(ines, "unicode", type="point", position=[1.125, -2.25, 70.0], label=LABEL)
    gone = await make(sam, "deleted", type="point", position=[5, 5, 5], label="mistake")
    # Edits: the surgeon moves the measurement's end (the length is recomputed), the instructor relabels the point.
    assert (await sam.op("annotation.update", id=ids["measurement"], b=[3.0, 4.0, 10.0]))["ok"]
    assert (await ines.op("annotation.update", id=ids["point"], label="round window niche"))["ok"]
    assert (await sam.op("annotation.delete", id=gone))["ok"]
    del ids["deleted"]
    await ines.close()
    await sam.close()
    return ids

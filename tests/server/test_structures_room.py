"""Named structures in a room, with several participants at once over real sockets: a structure grown from a
seed appears for everyone (the job's progress, then structure.add with a mesh their invites may fetch), hiding
it hides it for everyone, and refusals say why to the whole room."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest
from conftest import write_ct_series
from hubtools import RoomClient, admin, settings, until
from test_server_api import zip_of

from server.app import build_app

SPACING = 2.0


def sphere_series(folder):
    """A hollow sphere of bone (1000 HU, radius 30-40 mm) in water: 48 slices of 64 x 64, 2 mm apart."""
    n, size = 48, 64
    z, y, x = np.mgrid[0:n, 0:size, 0:size].astype(np.float64)
    r = np.sqrt(((x - 31.5) * SPACING) ** 2 + ((y - 31.5) * SPACING) ** 2 + ((z - 23.5) * SPACING) ** 2)
    hu = np.where((r > 30) & (r < 40), 1000.0, 0.0)
    positions = [(-63.0, -63.0, k * SPACING) for k in range(n)]
    write_ct_series(folder, positions, (hu + 1024).astype(np.uint16), pixel_spacing=(SPACING, SPACING),
                    thickness=SPACING, description="SPHERE")
    return folder


async def wait_job(http, app, job_id: str) -> dict:
    for _ in range(1200):
        job = await (await http.get(f"/api/jobs/{job_id}", headers=admin(app))).json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(job)


async def test_a_grown_structure_appears_for_everyone_and_hiding_it_hides_it_for_everyone(aiohttp_server, tmp_path):
    app = build_app(settings(tmp_path / "data"))
    server = await aiohttp_server(app, shutdown_timeout=0.5)
    url = str(server.make_url("")).rstrip("/")
    clients = []
    async with aiohttp.ClientSession(url) as http:
        r = await http.post("/api/studies", data=zip_of(sphere_series(tmp_path / "ct")),
                            headers={**admin(app), "Content-Type": "application/zip"})
        study = (await r.json())["study_id"]
        r = await http.post(f"/api/studies/{study}/meshes", json={"presets": ["bone"], "target_triangles": 5000},
                            headers=admin(app))
        job = await wait_job(http, app, (await r.json())["job"]["id"])
        r = await http.post("/api/rooms", json={"study_id": study, "mesh_ids": job["mesh_ids"], "mode": "training"},
                            headers=admin(app))
        created = await r.json()
        tokens = {role: created["invites"][role]["token"] for role in ("instructor", "student")}

        async def join(role):
            r = await http.post("/api/invites/exchange", json={"token": tokens[role], "name": f"A {role}"})
            client = RoomClient(url, (await r.json())["token"])
            clients.append(client)
            await client.connect()
            await until(lambda: client.poses, "the welcome")
            return client

        try:
            instructor, student = await join("instructor"), await join("student")
            # A seed on the shell's inside (x = 35 mm from the centre): the bone band's component is the shell.
            centre = [-63.0 + 31.5 * SPACING, -63.0 + 31.5 * SPACING, 23.5 * SPACING]
            seed = [centre[0] + 35.0, centre[1], centre[2]]
            ack = await instructor.op("structure.grow", seed=seed, name="Shell", color="#3366ff",
                                      max_radius_mm=120)
            assert ack["ok"], ack
            refused = await student.op("structure.grow", seed=seed, name="Mine")
            assert refused["error"]["detail"] == "students may not grow structures"
            for client in (instructor, student):
                await until(lambda c=client: any(e.kind == "structure.add" for e in c.events), "structure.add", 120)
            added = next(e for e in student.events if e.kind == "structure.add")
            assert added.author == "server"
            assert (added.data["name"], added.data["color"]) == ("Shell", "#3366ff")
            # The water inside the shell is a hole smaller than the shell: filled, the structure is the whole ball.
            assert added.data["volume_ml"] == pytest.approx(4 / 3 * np.pi * 40**3 / 1000, rel=0.05)
            key = added.data["id"]
            assert key == f"{added.data['mesh']}:1"
            assert any(name == "structure.progress" for name, _ in student.other)  # progress reached the room
            # The student's invite may fetch the new mesh.
            invite = {"Authorization": f"Bearer {student.token}"}
            r = await http.get(f"/api/meshes/{added.data['mesh']}.glb", headers=invite)
            assert r.status == 200 and (await r.read())[:4] == b"glTF"

            ack = await instructor.op("structure.style", mesh=key, visible=False, opacity=0.4)
            assert ack["ok"], ack
            for client in (instructor, student):
                await client.wait_seq(ack["seq"])
                assert client.state.structures[key]["visible"] is False
                assert client.state.structures[key]["opacity"] == 0.4
            assert app_state(server, created).structures[key]["visible"] is False

            # A seed in the water outside the sphere with a band of bone: nothing there to grow; the room hears why.
            ack = await instructor.op("structure.grow", seed=[-60.0, -60.0, 2.0], name="Nothing", low=900, high=1100)
            assert ack["ok"]
            for client in (instructor, student):
                await until(lambda c=client: any(e.kind == "structure.fail" for e in c.events), "structure.fail", 120)
            failed = next(e for e in student.events if e.kind == "structure.fail")
            assert "outside the band" in failed.data["reason"]
            assert student.state.growing == {}
        finally:
            for client in clients:
                await client.close()


def app_state(server, created):
    from server.appkeys import HUB

    return server.app[HUB].rooms[created["room"]["id"]].room.state

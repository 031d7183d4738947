"""Mesh provenance: a room's log records, for every mesh it shows, the hash of its input instances, how it was
built and the SHA-256 of every GLB served; `theatrum verify` reports them, and a GLB swapped on disk after the
room opened no longer matches its provenance leaf."""

from __future__ import annotations

import asyncio
import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from conftest import DICOM, require_path

from reconstruction import __version__
from server.app import build_app
from server.appkeys import ADMIN_TOKEN, ARTIFACTS, CATALOG
from server.cli.main import main
from server.config import Settings

REGULAR = DICOM / "ct-head-phantom-philips" / "DICOM" / "S21570" / "S2010"


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    app = build_app(Settings(data=tmp_path / "data", workers=1))
    c = await aiohttp_client(app)
    c.h = {"Authorization": f"Bearer {app[ADMIN_TOKEN]}"}
    return c


def zip_of(files: list[Path]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path in files:
            z.write(path, path.name)
    return buf.getvalue()


async def built_mesh(client) -> tuple[str, list[Path]]:
    """Upload the Philips phantom's regular series and build its bone mesh: (mesh id, the image files)."""
    files = sorted(p for p in require_path(REGULAR, "the Philips phantom").iterdir() if p.name != "DIRFILE")
    r = await client.post("/api/studies", data=zip_of(files), headers={**client.h, "Content-Type": "application/zip"})
    assert r.status == 201, await r.text()
    study = (await r.json())["study_id"]
    body = {"presets": ["bone"], "target_triangles": 20_000, "largest_only": True}
    r = await client.post(f"/api/studies/{study}/meshes", json=body, headers=client.h)
    assert r.status == 202, await r.text()
    job = (await r.json())["job"]
    for _ in range(1200):
        job = await (await client.get(f"/api/jobs/{job['id']}", headers=client.h)).json()
        if job["state"] not in ("queued", "running"):
            break
        await asyncio.sleep(0.2)
    assert job["state"] == "done", job
    return job["mesh_ids"][0], files


async def test_a_room_logs_where_its_meshes_came_from_and_a_swapped_glb_is_caught(client, tmp_path, capsys):
    mesh_id, files = await built_mesh(client)
    study = client.server.app[CATALOG].mesh(mesh_id)["study_id"]
    r = await client.post("/api/rooms", json={"study_id": study, "mesh_ids": [mesh_id], "mode": "consult"},
                          headers=client.h)
    assert r.status == 201, await r.text()
    room = (await r.json())["room"]["id"]
    events = (await (await client.get(f"/api/rooms/{room}/events", headers=client.h)).json())["events"]
    assert [(e["seq"], e["kind"], e["author"]) for e in events] == [(1, "room.open", "server"),
                                                                    (2, "mesh.provenance", "server")]
    (entry,) = events[1]["data"]["meshes"]

    # The inputs: SHA-256 over the sorted content hashes of the very files that went in.
    shas = sorted(hashlib.sha256(path.read_bytes()).hexdigest() for path in files)
    assert entry["inputs"] == hashlib.sha256("\n".join(shas).encode()).hexdigest()
    assert {key: entry[key] for key in ("mesh", "preset", "target_triangles", "largest_only", "allow_gaps",
                                        "slice_smoothing", "version")} == {
        "mesh": mesh_id, "preset": "bone", "target_triangles": 20_000, "largest_only": True, "allow_gaps": False,
        "slice_smoothing": None, "version": __version__}
    assert isinstance(entry["threshold"], float)
    # Every GLB the server serves for the mesh is recorded by its SHA-256.
    variants = {"draco": "", "draco_lod0": "?lod=0", "full": "?format=plain", "lod0": "?format=plain&lod=0"}
    for variant, query in variants.items():
        r = await client.get(f"/api/meshes/{mesh_id}.glb{query}", headers={**client.h, "Accept-Encoding": "identity"})
        assert r.status == 200
        assert entry["glb"][variant] == hashlib.sha256(await r.read()).hexdigest(), variant

    bundle = tmp_path / "room.zip"
    bundle.write_bytes(await (await client.get(f"/api/rooms/{room}/export", headers=client.h)).read())
    stored = client.server.app[ARTIFACTS].path_for(entry["glb"]["draco"], ".glb")
    downloaded = tmp_path / f"{mesh_id}.glb"
    r = await client.get(f"/api/meshes/{mesh_id}.glb", headers=client.h)
    downloaded.write_bytes(await r.read())
    capsys.readouterr()
    assert main(["verify", str(bundle), "--glb", str(stored), "--glb", str(downloaded)]) == 0
    out = capsys.readouterr().out
    assert f"mesh {mesh_id} (bone, seq 2): inputs {entry['inputs'][:16]}" in out
    assert f"OK {stored}: a GLB of mesh {mesh_id}" in out and f"OK {downloaded}: a GLB of mesh {mesh_id}" in out

    # Swap the stored GLB for another one (here the coarse level of detail) behind the server's back.
    stored.write_bytes(client.server.app[ARTIFACTS].path_for(entry["glb"]["draco_lod0"], ".glb").read_bytes())
    assert main(["verify", str(bundle), "--glb", str(stored)]) == 1
    out = capsys.readouterr().out
    assert f"FAILED {stored}: mesh {mesh_id} (provenance at seq 2): its SHA-256" in out
    assert "the file changed after the room opened" in out
    # a file that claims no mesh and matches no recorded GLB fails too
    stranger = tmp_path / "other.glb"
    stranger.write_bytes(b"glTF" + bytes(60))
    assert main(["verify", str(bundle), "--glb", str(stranger)]) == 1
    assert "is no GLB of the room's mesh provenance" in capsys.readouterr().out
    # and the server no longer serves it
    assert (await client.get(f"/api/meshes/{mesh_id}.glb", headers=client.h)).status == 503
    # a download named after the mesh that is none of its variants fails, naming the mesh
    downloaded.write_bytes(b"glTF" + bytes(60))
    assert main(["verify", str(bundle), "--glb", str(downloaded)]) == 1
    assert f"FAILED {downloaded}: mesh {mesh_id} (provenance at seq 2): its SHA-256" in capsys.readouterr().out


async def test_a_mesh_added_to_an_open_room_later_gets_its_provenance_logged_and_sent(aiohttp_server, tmp_path):
    from hubtools import SKIN, Lobby

    from server.appkeys import HUB
    from server.services.provenance import mesh_provenance
    from sessions.ops import OpError

    lobby = await Lobby.open(aiohttp_server, tmp_path / "data")
    try:
        ines = await lobby.client("instructor")
        data = mesh_provenance(lobby.app[CATALOG], [SKIN])
        event = await lobby.app[HUB].record_provenance(lobby.live, data)
        await ines.wait_seq(event.seq)
        assert (ines.events[-1].kind, ines.events[-1].data) == ("mesh.provenance", data)
        assert data["meshes"][0]["glb"]["draco"] == hashlib.sha256(lobby.app[ARTIFACTS].path_for(
            data["meshes"][0]["glb"]["draco"], ".glb").read_bytes()).hexdigest()
        await lobby.hub.close_room(lobby.live)
        with pytest.raises(OpError):
            await lobby.app[HUB].record_provenance(lobby.live, data)
    finally:
        await lobby.close()

"""Nothing half-stored, nothing unnoticed: what a crash or a damaged disk leaves behind is swept or refused.

- files an interrupted import stored without its catalog rows are removed at start;
- a damaged catalog or ledger database, or a checkpoint whose signed note no longer verifies, stops the server
  at start with a line naming the file (exit code 2);
- a Merkle node that no longer hashes from the events is found after start, and no proof or export of that
  room is handed out (a proof is checked before it is served);
- a GLB or DICOM object whose content no longer matches its content address is neither served nor meshed.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import DICOM, free_port, require_path, write_ct_series
from hubtools import BONE, Lobby, admin, until
from serverproc import THEATRUM

from server.app import build_app
from server.appkeys import ARTIFACTS, CATALOG, HUB, LEDGER
from server.config import Settings
from server.storage.roomdb import ROOM_DB


def serve_once(data: Path, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """`theatrum serve` on `data`, expected to refuse to start."""
    require_path(THEATRUM, "the `theatrum` console script")
    return subprocess.run([str(THEATRUM), "serve", "--port", str(free_port()), "--data", str(data)],
                          capture_output=True, text=True, timeout=timeout)


def make_data(data: Path) -> None:
    """A data folder with every database created and some rows."""
    app = build_app(Settings(data=data, workers=1))
    for n in range(100):
        with app[CATALOG].transaction() as batch:
            batch.add_study(f"st{n}", "HEAD CT " * 10, "CT")
    app[CATALOG].close()
    app[HUB].db.close()
    app[LEDGER].close()


def damage(path: Path, page: int = 2, page_size: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    data[page * page_size: page * page_size + 300] = b"\xff" * 300  # its b-tree header and cell pointers
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("database", ["catalog.sqlite", "ledger.sqlite"])
def test_a_damaged_database_stops_the_server_naming_the_file(tmp_path: Path, database: str):
    data = tmp_path / "data"
    make_data(data)
    if database == "ledger.sqlite":  # give it pages to damage
        conn = sqlite3.connect(data / database)
        conn.execute("CREATE TABLE filler (x BLOB)")
        conn.executemany("INSERT INTO filler VALUES (?)", [(b"x" * 500,) for _ in range(100)])
        conn.commit()
        conn.close()
    damage(data / database)
    run = serve_once(data)
    assert run.returncode == 2, run.stdout + run.stderr
    assert str(data / database) in run.stderr and "damaged" in run.stderr and "Traceback" not in run.stderr


async def test_orphaned_files_are_swept_at_start_and_referenced_ones_kept(aiohttp_server, tmp_path):
    lobby = await Lobby.open(aiohttp_server, tmp_path / "d")
    store = lobby.app[ARTIFACTS]
    (kept,) = [p for _, suffix, p in store.stored() if suffix == ".glb"]  # the seeded mesh's GLB
    await lobby.close()
    await lobby.server.close()
    orphan = require_path(DICOM / "pydicom-quirks" / "CT_small.dcm").read_bytes()
    digest = hashlib.sha256(orphan).hexdigest()
    path = store.path_for(digest, ".dcm")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orphan)  # what a kill -9 between storing and committing an import leaves
    lobby = await Lobby.open(aiohttp_server, tmp_path / "d")
    try:
        assert not path.exists() and kept.exists()
    finally:
        await lobby.close()


async def test_a_tampered_checkpoint_note_stops_the_server(tmp_path: Path, aiohttp_server):
    data = tmp_path / "d"
    lobby = await Lobby.open(aiohttp_server, data, ledger_every_events=1)
    client = await lobby.client("surgeon", "Sam")
    await client.op("annotation.create", type="point", position=[1, 2, 3])
    await lobby.close()
    await lobby.server.close()
    conn = sqlite3.connect(data / "ledger.sqlite")
    conn.execute("UPDATE checkpoints SET note = replace(note, 'time ', 'time 1') WHERE size = "
                 "(SELECT MAX(size) FROM checkpoints)")
    conn.commit()
    conn.close()
    run = serve_once(data)
    assert run.returncode == 2 and str(data / "ledger.sqlite") in run.stderr and "does not verify" in run.stderr


async def test_a_tampered_merkle_node_is_found_and_no_proof_is_handed_out(aiohttp_server, tmp_path):
    data = tmp_path / "d"
    lobby = await Lobby.open(aiohttp_server, data)
    client = await lobby.client("surgeon", "Sam")
    for n in range(40):
        await client.op("pointer.highlight", position=[n / 100, 0, 0])
    room = lobby.id
    r = await lobby.http.get(f"/api/rooms/{room}/proof", params={"seq": "5"}, headers=admin(lobby.app))
    assert r.status == 200
    await lobby.close()
    await lobby.server.close()
    conn = sqlite3.connect(data / ROOM_DB)
    (log_number,) = conn.execute("SELECT id FROM event_logs WHERE room = ?", (room,)).fetchone()
    row = (log_number << 40) | 8  # seq 8 holds the node over leaves 0..7 (not on the right border of 42)
    (nodes,) = conn.execute("SELECT nodes FROM events WHERE id = ?", (row,)).fetchone()
    conn.execute("UPDATE events SET nodes = ? WHERE id = ?", (nodes[:-32] + bytes(32), row))
    conn.commit()
    conn.close()
    lobby = await Lobby.open(aiohttp_server, data)  # a new room; the old one is still there
    try:
        hub = lobby.app[HUB]
        await until(lambda: room in hub.unverified, "the start-up check of the stored trees", timeout=30)
        assert "seq 8" in hub.unverified[room]
        for path, params in ((f"/api/rooms/{room}/proof", {"seq": "5"}), (f"/api/rooms/{room}/export", {})):
            r = await lobby.http.get(path, params=params, headers=admin(lobby.app))
            assert r.status == 503 and (await r.json())["error"] == "integrity"
        hub.unverified.clear()  # even without the start-up check, a proof is checked before it is served
        r = await lobby.http.get(f"/api/rooms/{room}/proof", params={"seq": "12"}, headers=admin(lobby.app))
        assert r.status == 503  # seq 12's proof holds the altered node over seq 1..8
        r = await lobby.http.get(f"/api/rooms/{room}/proof", params={"seq": "5"}, headers=admin(lobby.app))
        assert r.status == 200  # seq 5's does not: it is still right
        r = await lobby.http.get(f"/api/rooms/{lobby.id}/proof", params={"seq": "1"}, headers=admin(lobby.app))
        assert r.status == 200  # the other room is fine
    finally:
        await lobby.close()


async def test_a_changed_glb_is_not_served_and_a_changed_dicom_is_not_meshed(aiohttp_server, tmp_path):
    lobby = await Lobby.open(aiohttp_server, tmp_path / "d")
    try:
        catalog, store, headers = lobby.app[CATALOG], lobby.app[ARTIFACTS], admin(lobby.app)
        digest = catalog.mesh(BONE)["artifacts"]["draco"]
        r = await lobby.http.get(f"/api/meshes/{BONE}.glb", headers=headers)
        assert r.status == 200 and r.headers["ETag"] == f'"{digest}"'
        path = store.path_for(digest, ".glb")
        path.write_bytes(path.read_bytes()[:-1] + b"!")
        r = await lobby.http.get(f"/api/meshes/{BONE}.glb", headers=headers)
        assert r.status == 503 and (await r.json())["error"] == "integrity"

        series = write_ct_series(tmp_path / "series", [(0, 0, z) for z in range(4)])
        files = [("file", open(p, "rb")) for p in series]  # noqa: SIM115
        try:
            r = await lobby.http.post("/api/studies", data={f"file{n}": f for n, (_, f) in enumerate(files)},
                                      headers=headers)
        finally:
            for _, f in files:
                f.close()
        assert r.status == 201, await r.text()
        study = (await r.json())["study_id"]
        (instance, *_) = catalog.instances_of(study)
        dicom = store.path_for(instance["sha256"], ".dcm")
        dicom.write_bytes(dicom.read_bytes().replace(b"SYNTHETIC HEAD", b"SYNTHETIC HEAT"))
        r = await lobby.http.post(f"/api/studies/{study}/meshes", json={"presets": ["bone"]}, headers=headers)
        job = (await r.json())["job"]["id"]
        await until(lambda: catalog.job(job)["state"] in ("done", "failed"), "the job", timeout=120)
        failed = catalog.job(job)
        assert failed["state"] == "failed" and str(dicom) in failed["error"]
        assert "no longer matches its content address" in failed["error"]
    finally:
        await lobby.close()
        shutil.rmtree(tmp_path / "series", ignore_errors=True)

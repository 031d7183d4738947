"""The ledger wired into the hub: real socket clients make a room's events, the server cuts signed checkpoints,
anchors them on the local chain, exports the room, and `theatrum verify` accepts the bundle (and refuses a
tampered one)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import zipfile

from conftest import REPO
from hubtools import Lobby

from server.appkeys import ADMIN_TOKEN


def verify(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli.main", "verify", str(path), "--json"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


async def test_room_events_are_checkpointed_anchored_exported_and_verified(aiohttp_server, tmp_path):
    lobby = await Lobby.open(aiohttp_server, tmp_path / "data", ledger_every_events=5)
    try:
        instructor = await lobby.client("instructor", "Dr Grey")
        for n in range(12):
            ack = await instructor.op("annotation.create", type="point", position=[n, 2.0, 3.0], label=f"p{n}")
            assert ack["ok"], ack
        await instructor.op("annotation.create", type="measurement", a=[0, 0, 0], b=[3, 4, 12])
        http, headers = lobby.http, {"Authorization": f"Bearer {lobby.app[ADMIN_TOKEN]}"}
        close = await http.post(f"{lobby.url}/api/rooms/{lobby.id}/close", headers=headers)
        assert close.status == 200, await close.text()
        size = lobby.live.room.seq

        async def anchored() -> bool:
            r = await http.get(f"{lobby.url}/api/rooms/{lobby.id}/checkpoints", headers=headers)
            body = await r.json()
            rows = body["checkpoints"]
            return bool(rows) and rows[-1]["size"] == size and all(
                a["status"] == "anchored" for row in rows for a in row["anchorings"])

        for _ in range(100):
            if await anchored():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("every checkpoint, including the one cut at close, must be anchored locally")

        key = await (await http.get(f"{lobby.url}/api/ledger/key")).json()  # public: no token
        assert key
        r = await http.get(f"{lobby.url}/api/rooms/{lobby.id}/export", headers=headers)
        assert r.status == 200
        bundle = tmp_path / "room.zip"
        bundle.write_bytes(await r.read())
        names = set(zipfile.ZipFile(bundle).namelist())
        assert {"events.jsonl", "checkpoints.json", "anchors.json", "README.txt"} <= names
        events = zipfile.ZipFile(bundle).read("events.jsonl").decode()
        assert events.count("\n") == size

        run = verify(bundle)
        assert run.returncode == 0, run.stdout + run.stderr
        assert json.loads(run.stdout)

        # Change one event's label: the verifier names the first failing seq.
        tampered = tmp_path / "tampered.zip"
        with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(tampered, "w") as dst:
            for item in src.infolist():
                data = src.read(item.filename)
                if item.filename == "events.jsonl":
                    data = data.replace(b'"label":"p7"', b'"label":"p8"', 1)
                dst.writestr(item, data)
        run = verify(tampered)
        assert run.returncode == 1, run.stdout + run.stderr
        assert "seq" in (run.stdout + run.stderr)
    finally:
        await lobby.close()

"""A full disk: ops are refused as `unavailable`, writes over HTTP answer 507, presence stays right in memory,
and the leave and the checkpoint the disk held back are written as soon as space returns.

The data folder is on a small tmpfs mounted for the test (as root, which CI is), filled with a file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import pytest
from conftest import IN_CI
from hubtools import STUDY, Lobby, admin, until

from server.appkeys import CATALOG, LEDGER
from server.storage.catalog import SeriesRecord


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 24 MB tmpfs at tmp_path/disk, unmounted afterwards."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("mounting a tmpfs needs root, which CI has")
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> None:
    """Fill `disk` with another file until the next write fails (a failed write may have freed some space)."""
    filler = disk / f"filler-{len(list(disk.glob('filler-*')))}"
    with open(filler, "wb", buffering=0) as out:
        for block in (64 * 1024, 512):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * block)
    with pytest.raises(OSError) as full:
        (disk / "probe").write_bytes(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC


async def test_a_full_disk_refuses_writes_keeps_presence_and_catches_up(aiohttp_server, small_disk):
    lobby = await Lobby.open(aiohttp_server, small_disk / "data", ledger_every_events=100,
                             ledger_every_seconds=0.2)
    try:
        with lobby.app[CATALOG].transaction() as batch:  # a series to ask meshes of
            batch.put_series(SeriesRecord("se-full", STUDY, "1.2.3", "CT", "HEAD", 3, 8, 8, [1.0, 0.5, 0.5],
                                          "0" * 64))
        ines = await lobby.client("instructor", "Ines")
        early = await lobby.client("student", "Early")
        stu = await lobby.client("student", "Stu")
        fill(small_disk)
        # The room log's file may have a little room left in its last page: ops until one is refused use it up.
        for _ in range(20):
            ack = await ines.op("annotation.create", type="point", position=[1, 2, 3])
            if not ack["ok"]:
                break
        assert ack == {"ok": False, "error": {"code": "unavailable", "detail": "the server could not record the op"}}

        # Early and Stu leave while the disk is full. A failed commit may leave its space to the next one, so
        # Early's leave may still get in; Stu's cannot. Gone in memory at once (no ghost), logged later.
        before = lobby.live.room.seq
        await early.close()
        await until(lambda: early.you["id"] not in {p.id for p in lobby.live.present()}, "Early's leave")
        logged = lobby.live.room.seq - before
        await stu.close()
        await until(lambda: stu.you["id"] in lobby.live.unlogged_leaves, "Stu's leave held back")
        assert lobby.live.room.seq == before + logged
        view = await (await lobby.http.get(f"/api/rooms/{lobby.id}", headers=admin(lobby.app))).json()
        assert view["present"] == 1
        assert {p["id"] for p in view["participants"] if p["present"]} == {ines.you["id"]}

        headers = admin(lobby.app)
        # Writes over HTTP answer 507 (an upload that ran out of space frees what it wrote; fill up again).
        for method, path, body in (("POST", "/api/studies", {"data": b"DICM" * 4096}),
                                   ("POST", f"/api/studies/{STUDY}/meshes", {"json": {"series": "se-full"}}),
                                   ("GET", f"/api/rooms/{lobby.id}/export", {})):
            response = await lobby.http.request(method, path, headers=headers, **body)
            assert response.status == 507, (path, await response.text())
            assert (await response.json())["error"] == "insufficient_storage"
            fill(small_disk)

        for filler in small_disk.glob("filler-*"):  # space returns
            filler.unlink()
        await lobby.hub.tick()
        assert not lobby.live.unlogged_leaves and lobby.live.room.seq == before + 2
        await ines.wait_seq(before + 2)
        assert [(e.kind, e.data["participant"]) for e in ines.events[-2:]] == [
            ("participant.leave", early.you["id"]), ("participant.leave", stu.you["id"])]
        ledger = lobby.app[LEDGER]

        def covered() -> int:
            latest = ledger.store.latest(lobby.id)
            return latest.size if latest is not None else 0

        await until(lambda: covered() == lobby.live.room.seq, "the checkpoint the full disk held back", timeout=5)
        assert (await ines.op("annotation.create", type="point", position=[1, 2, 3]))["ok"]
        response = await lobby.http.get(f"/api/rooms/{lobby.id}/export", headers=headers)
        assert response.status == 200 and response.content_type == "application/zip"
    finally:
        await lobby.close()

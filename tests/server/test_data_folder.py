"""The data folder holds patient data: it is the server owner's alone (folder 0700, files 0600), from the
first start, after an upload, and for a folder an earlier version left readable by others."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import aiohttp
from conftest import write_ct_series
from hubtools import admin, start

from server.appkeys import CATALOG


def widened(root: Path) -> list[str]:
    """Everything under `root` (root included) that its group or others may read, write or enter."""
    return [f"{p} {stat.filemode(p.stat().st_mode)}" for p in (root, *root.rglob("*")) if p.stat().st_mode & 0o077]


async def test_the_data_folder_is_private(aiohttp_server, tmp_path):
    data = tmp_path / "data"
    server, app, url = await start(aiohttp_server, data)
    paths = write_ct_series(tmp_path / "series", [(0, 0, z) for z in range(4)])
    async with aiohttp.ClientSession(url) as http:
        files = {f"file{n}": io.BytesIO(path.read_bytes()) for n, path in enumerate(paths)}
        response = await http.post("/api/studies", data=files, headers=admin(app))
        assert response.status == 201, await response.text()
    assert app[CATALOG].studies()
    assert widened(data) == []
    await server.close()

    for path in (data / "catalog.sqlite", data / "objects"):  # as a copy with a wide umask would leave them
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    server, app, url = await start(aiohttp_server, data)
    assert widened(data) == []
    await server.close()

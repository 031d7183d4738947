"""The web client's files as the server serves them: the page, its modules, and only the npm folders the
import map names (three's build and examples/jsm, socket.io-client's dist, IWER's build); nothing above them."""

from __future__ import annotations

import json
import re

import pytest
from conftest import REPO, require_path

from server.app import build_app
from server.config import Settings

WEB_CLIENT = REPO / "web-client"
MODULES = WEB_CLIENT / "node_modules"


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    require_path(MODULES / "three", "web-client/node_modules (run `npm ci` in web-client)")
    app = build_app(Settings(data=tmp_path / "data", workers=1))
    return await aiohttp_client(app)


def import_map() -> dict[str, str]:
    html = (WEB_CLIENT / "index.html").read_text()
    found = re.search(r'<script type="importmap">(.*?)</script>', html, re.S)
    assert found, "index.html has no import map"
    return json.loads(found.group(1))["imports"]


async def test_the_page_and_every_import_map_target_are_served(client):
    page = await client.get("/")
    assert page.status == 200 and "importmap" in await page.text()
    targets = import_map()
    assert set(targets) == {"three", "three/addons/", "socket.io-client", "iwer"}
    for name, url in targets.items():
        probe = url + "loaders/GLTFLoader.js" if url.endswith("/") else url
        r = await client.get(probe)
        assert r.status == 200, (name, probe, r.status)
        assert "javascript" in r.headers["Content-Type"], (probe, r.headers["Content-Type"])
    for path in ("/src/main.js", "/src/app.js", "/vendor/three/examples/jsm/libs/draco/draco_decoder.wasm"):
        assert (await client.get(path)).status == 200, path


@pytest.mark.parametrize("path", [
    "/vendor/three/package.json",  # the package, outside the served folders
    "/vendor/three/build/../package.json",
    "/vendor/three/build/%2e%2e/package.json",
    "/vendor/three/build/..%2fpackage.json",
    "/vendor/ws/package.json",  # a package the client does not import
    "/vendor/gltf-validator/package.json",
    "/src/../index.html",
    "/node_modules/three/package.json",
])
async def test_nothing_else_of_node_modules_is_served(client, path):
    from yarl import URL

    r = await client.get(URL(path, encoded=True))
    assert r.status in (403, 404), (path, r.status)

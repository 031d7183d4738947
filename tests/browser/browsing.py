"""Helpers for the browser tests: Debian's Chromium under Playwright, a real `theatrum serve` with an imported
study, pages of the web client, the emulated headset (IWER), and a look at screenshots.

Chromium runs headless with SwiftShader (WebGL on the CPU), so the flags are the ones of
../shared/browser-testing.md. The server is the installed console script on a free loopback port with a
private data folder; `--import` puts the Philips head phantom in its library at start.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import math
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import IN_CI, require_tool
from serverproc import THEATRUM, Api, ServerProcess, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
]
VIEWPORT = {"width": 880, "height": 560}
# SwiftShader draws on the CPU: the test room's bone surface is built with a smaller budget than the
# 300,000-triangle default, so that an emulated headset renders a few frames a second on a shared 2-core box.
TEST_TRIANGLES = 60_000


def require_module(name: str, what: str):
    """Import module `name`; without it skip the test (or fail it under CI, like require_path)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        reason = f"{what} is not installed (python module {name})"
        if IN_CI:
            pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)")
        pytest.skip(reason)


@pytest.fixture(scope="module", name="browser")
def browser_fixture():
    """`browser`: Debian's Chromium under Playwright, for one test module (import browser_fixture into it)."""
    require_tool(CHROMIUM, "Chromium (apt-get install chromium; .ci/run installs it)")
    sync_api = require_module("playwright.sync_api", "Playwright (pip install playwright)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def write_sample_phantom(folder: Path) -> Path:
    """Write the sample CT head phantom into `folder` with the parameters `make run` uses (sample_data/phantom.py);
    returns the folder."""
    import importlib.util
    import sys

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("sample_phantom", REPO / "sample_data" / "phantom.py")
    phantom = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(phantom)
    phantom.write_phantom(folder)
    return folder


def start_server(data: Path, imports: list[Path], *, timeout: float = 60.0,
                 env: dict[str, str] | None = None) -> ServerProcess:
    """`theatrum serve --import ...` on a free loopback port, answering /api/health. Requires the console script."""
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = data.parent / f"server-{port}.log"
    log = open(log_path, "ab")  # noqa: SIM115 (closed by ServerProcess.close)
    extra = env or {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "THEATRUM_WORKERS": "2"}
    env.pop("THEATRUM_IMPORTS", None)
    env.update(extra)
    command = [str(THEATRUM), "serve", "--host", "127.0.0.1", "--port", str(port), "--data", str(data)]
    for path in imports:
        command += ["--import", str(path)]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                               cwd=data.parent, start_new_session=True)
    server = ServerProcess(process, data, port, log_path, _log=log)
    try:
        server.wait_healthy(timeout)
    except BaseException:
        server.kill_group()
        raise
    return server


def wait_for_study(api: Api, server: ServerProcess, until=lambda study: True, *, timeout: float = 180.0) -> dict:
    """The first study of the library once it is imported and `until(study)` holds (the import at start, and
    the meshes it builds, run in the background)."""
    end = time.monotonic() + timeout
    study: dict = {}
    while time.monotonic() < end:
        server.check_alive()
        studies = api.get("/api/studies").json()["studies"]
        if studies:
            study = api.get(f"/api/studies/{studies[0]['id']}").json()
            if until(study):
                return study
        time.sleep(0.2)
    raise AssertionError(f"the imported study is not ready after {timeout} s: {study}\n{server.output()[-3000:]}")


def build_meshes(api: Api, server: ServerProcess, study_id: str, request: dict) -> list[dict]:
    """POST a mesh request and wait for its job; returns the meshes."""
    r = api.post(f"/api/studies/{study_id}/meshes", request)
    assert r.status in (200, 202), (r.status, r.body[:1000])
    answer = r.json()
    if "meshes" in answer:
        return answer["meshes"]
    job = api.wait_job(answer["job"]["id"], lambda j: j["state"] in ("done", "failed", "cancelled"), server=server)
    assert job["state"] == "done", job
    return [api.get(f"/api/meshes/{mesh_id}").json() for mesh_id in job["mesh_ids"]]


@contextlib.contextmanager
def phantom_room(tmp_path_factory, *, title: str, prepare=None):
    """A server with the sample phantom (as `make run` writes it), its bone surface and a training room over
    them: yields (server, api, study, room). `prepare(api, server, study)`, if given, returns more mesh ids
    for the room (built after the bone). The server is stopped on exit."""
    folder = write_sample_phantom(tmp_path_factory.mktemp("phantom") / "phantom")
    server = start_server(tmp_path_factory.mktemp("theatrum") / "data", [folder])
    try:
        api = server.api
        study = wait_for_study(api, server)
        bone = build_meshes(api, server, study["id"], {"presets": ["bone"], "target_triangles": TEST_TRIANGLES})
        more = prepare(api, server, study) if prepare else []
        room = create_room(api, study["id"], [bone[0]["id"], *more], title=title)
        yield server, api, study, room
    finally:
        if server.stop() is None:
            server.kill_group()


def create_room(api: Api, study_id: str, mesh_ids: list[str], *, mode: str = "training",
                title: str = "Head phantom, browser test") -> dict:
    """POST /api/rooms; returns {room, invites}."""
    r = api.post("/api/rooms", {"study_id": study_id, "mesh_ids": mesh_ids, "mode": mode, "title": title})
    assert r.status == 201, (r.status, r.body[:1000])
    return r.json()


class Client:
    """One browser context showing one page of the web client, with its console errors collected."""

    def __init__(self, browser, base_url: str, query: str, *, viewport: dict | None = None, name: str | None = None):
        """Open the web client at `base_url/?query`. A room's role link (`invite=` a role token) asks for a name
        first, as it asks anyone: `name` (default: the role's name in the link) is typed and the link exchanged."""
        self.context = browser.new_context(viewport=viewport or VIEWPORT)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.goto(f"{base_url}/?{query}")
        role_link = invite_payload(query)
        if role_link.get("kind") == "role" and "replay" not in query:
            self.page.fill("#exchange-name", name or role_link["name"])
            self.page.click("#exchange-button")
            self.page.wait_for_function("window.theatrum && !theatrum.namePage", timeout=20_000)

    def wait_ready(self, timeout_ms: float = 60_000) -> None:
        """Until the room is live and its full-detail meshes are in."""
        self.page.wait_for_function(
            "window.theatrum && theatrum.ready && theatrum.room && theatrum.room.status === 'live'", timeout=timeout_ms)

    def js(self, expression: str, arg=None):
        return self.page.evaluate(expression, arg)

    def state_annotations(self) -> list[dict]:
        return self.js("[...theatrum.room.state.annotations.values()]")

    def close(self) -> None:
        self.context.close()


# -- the emulated headset (IWER) -------------------------------------------------------------------------------
def invite_payload(query: str) -> dict:
    """The payload of the `invite=` token in a query string ({} without one): docs/protocol.md "Invites"."""
    import base64
    import json
    from urllib.parse import parse_qs

    token = parse_qs(query).get("invite", [""])[0]
    if not token:
        return {}
    payload = token.split(".")[0]
    try:
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return {}


def look_rotation(origin: list[float], target: list[float]) -> list[float]:
    """The quaternion [x, y, z, w] that turns -Z (where WebXR controllers and cameras point) toward target."""
    dx, dy, dz = (t - o for t, o in zip(target, origin, strict=True))
    yaw = math.atan2(-dx, -dz)
    pitch = math.atan2(dy, math.hypot(dx, dz))
    cy, sy, cp, sp = math.cos(yaw / 2), math.sin(yaw / 2), math.cos(pitch / 2), math.sin(pitch / 2)
    return [sp * cy, sy * cp, -sy * sp, cy * cp]  # yaw about Y, then pitch about the turned X


def place(client: Client, part: str, position: list[float], target: list[float]) -> None:
    """Put the emulated headset ('head') or a controller ('left'/'right') at `position` in the room, aimed at
    `target` (room coordinates). The device moves in its reference space, whose origin (the stage's rig) stands
    at the participant's seat: the room's pose is turned into the rig's frame first."""
    q = look_rotation(position, target)
    client.js("""([part, p, q]) => {
        const device = window.xrDevice;
        const thing = part === 'head' ? device : device.controllers[part];
        const rig = theatrum.stage.rig;
        rig.updateMatrixWorld(true);
        const inverse = rig.matrixWorld.clone().invert();
        const local = rig.position.clone().set(p[0], p[1], p[2]).applyMatrix4(inverse);
        const turn = rig.quaternion.clone().invert().multiply(rig.quaternion.clone().set(q[0], q[1], q[2], q[3]));
        thing.position.set(local.x, local.y, local.z);
        thing.quaternion.set(turn.x, turn.y, turn.z, turn.w);
    }""", [part, position, q])


BUTTONS = {"trigger": 0, "squeeze": 1, "thumbstick": 3, "a-button": 4, "b-button": 5}


def hold(client: Client, hand: str, button: str, down: bool, timeout_ms: float = 20_000) -> None:
    """Put a controller button down (or up) until the client's XR frame loop has seen it, and one frame more
    (the emulator samples buttons once per XR frame, and SwiftShader frames can be slow). The trigger fires
    selectstart/selectend on three.js' controllers, the squeeze squeezestart/squeezeend."""
    client.js("([hand, button, value]) => window.xrDevice.controllers[hand].updateButtonValue(button, value)",
              [hand, button, 1 if down else 0])
    seen = (f"(down) => theatrum.xr.hands.some((h) => h.handedness === '{hand}' && h.inputSource"
            f" && Boolean(h.inputSource.gamepad.buttons[{BUTTONS[button]}].pressed) === down)")
    client.page.wait_for_function(seen, arg=down, polling=50, timeout=timeout_ms)
    next_frame(client, timeout_ms)


def press(client: Client, hand: str, button: str) -> None:
    """Press and release a controller button (see `hold`)."""
    hold(client, hand, button, True)
    hold(client, hand, button, False)


def next_frame(client: Client, timeout_ms: float = 20_000) -> None:
    """Wait until the page has run one more XR frame."""
    client.page.wait_for_function("(n) => theatrum.xr.frameCount > n", arg=client.js("theatrum.xr.frameCount"),
                                  polling=50, timeout=timeout_ms)


# -- screenshots ------------------------------------------------------------------------------------------------
def bone_fraction(png: bytes, *, box: float = 0.4) -> float:
    """The fraction of pixels in the central `box` (a fraction of width and height) that have bone's warm,
    light colour (the room's background, floor and table are dark or blue-grey). Requires a PNG."""
    import numpy as np
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)
    h, w, _ = image.shape
    y0, y1 = int(h * (0.5 - box / 2)), int(h * (0.5 + box / 2))
    x0, x1 = int(w * (0.5 - box / 2)), int(w * (0.5 + box / 2))
    r, g, b = (image[y0:y1, x0:x1, k] for k in range(3))
    return float(((r >= 110) & (r - b >= 25) & (g >= 90)).mean())


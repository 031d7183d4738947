"""Slice planes in a real browser: the sample phantom (sample_data/phantom.py, as `make run` writes it) in a
room, a surgeon and a student on two desktop pages. The surgeon puts a coronal plane through the head: both
pages show the skull's cross-section where the plane cuts the bone (screenshot pixels checked against the
server's own values on that plane), then the surgeon drags the plane and it moves on both pages, image and all.
A student may not move planes and is told why. An instructor in an emulated headset carries a plane with the
controller. The screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from browsing import (  # noqa: F401 (browser_fixture: the fixture `browser`)
    TEST_TRIANGLES,
    Client,
    browser_fixture,
    build_meshes,
    create_room,
    hold,
    next_frame,
    place,
    start_server,
    wait_for_study,
    write_sample_phantom,
)
from conftest import REPO
from PIL import Image
from scipy import ndimage

ARTIFACTS = REPO / "tests" / "artifacts"
BONE_HU, BRAIN_HU = (600, 3000), (20, 60)  # the skull; grey and white matter (in the bone window: 156+, 73-79)
SAMPLES = 40


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server with the sample phantom imported, its bone surface built, and a room over it."""
    folder = write_sample_phantom(tmp_path_factory.mktemp("phantom") / "phantom")  # as `make run` writes it
    server = start_server(tmp_path_factory.mktemp("theatrum") / "data", [folder])
    try:
        api = server.api
        study = wait_for_study(api, server)
        bone = build_meshes(api, server, study["id"], {"presets": ["bone"], "target_triangles": TEST_TRIANGLES})
        room = create_room(api, study["id"], [bone[0]["id"]], title="Sample phantom, slices")
        yield server, api, room
    finally:
        if server.stop() is None:
            server.kill_group()


@pytest.fixture(scope="module")
def pages(browser, served):
    server, _, room = served
    url = f"http://127.0.0.1:{server.port}"
    invites = room["invites"]
    surgeon = Client(browser, url, f"invite={invites['surgeon']['token']}")
    student = Client(browser, url, f"invite={invites['student']['token']}")
    for client in (surgeon, student):
        client.wait_ready()
        client.page.wait_for_function("theatrum.tools.slice.series !== null", timeout=30_000)
    yield surgeon, student
    for client in (surgeon, student):
        client.close()
    for client in (surgeon, student):
        assert not client.errors, client.errors


def plane_of(client: Client) -> dict:
    return client.js("[...theatrum.room.state.slices.values()][0]")


def wait_image(client: Client, plane: dict, timeout_ms: float = 30_000) -> None:
    """Until the page shows the full-size image of `plane` (its room state has it, and its image is in)."""
    client.page.wait_for_function(
        """([id, origin]) => {
            const p = theatrum.room.state.slices.get(id);
            const s = theatrum.slices.status()[id];
            return p && p.origin.every((x, i) => x === origin[i]) && s && s.ready && s.px >= 512;
        }""", arg=[plane["id"], plane["origin"]], polling=100, timeout=timeout_ms)


def hu_of(api, room_id: str, plane: dict, px: int = 512) -> np.ndarray:
    """The server's HU values on `plane` (GET .../slice?format=hu with the admin token)."""
    triple = lambda v: ",".join(repr(float(x)) for x in v)  # noqa: E731
    r = api.get(f"/api/rooms/{room_id}/slice?origin={triple(plane['origin'])}&u={triple(plane['u'])}"
                f"&v={triple(plane['v'])}&width_mm={plane['width_mm']}&height_mm={plane['height_mm']}&px={px}&format=hu")
    assert r.status == 200, r.body[:300]
    shape = next(value for name, value in r.headers.items() if name.lower() == "x-slice-shape")
    rows, columns = (int(n) for n in shape.split(","))
    return np.frombuffer(r.body, dtype="<i2").reshape(rows, columns)


def samples(hu: np.ndarray, band: tuple[int, int], count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 2) pixel (row, column) centres inside the region of HU in `band` (2 pixels from its edge)."""
    inside = ndimage.binary_erosion((hu >= band[0]) & (hu <= band[1]), iterations=2)
    found = np.argwhere(inside)
    assert len(found) >= count, f"only {len(found)} pixels in {band} HU"
    return found[rng.choice(len(found), count, replace=False)]


def lps_of(plane: dict, pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The LPS centres of image pixels (row, column), by the documented formula."""
    rows, columns = shape
    r, c = pixels[:, 0] + 0.5, pixels[:, 1] + 0.5
    return (np.asarray(plane["origin"])
            + ((c - columns / 2) * plane["width_mm"] / columns)[:, None] * np.asarray(plane["u"])
            + ((r - rows / 2) * plane["height_mm"] / rows)[:, None] * np.asarray(plane["v"]))


SCREEN_OF = """(points) => {
    // LPS mm -> model (glTF = 0.001 (L, S, -P)) -> world -> the canvas' CSS pixels.
    const { stage } = theatrum;
    const canvas = stage.renderer.domElement.getBoundingClientRect();
    const m = stage.modelFrame.matrixWorld;
    return points.map(([l, p, s]) => {
        const v = new stage.camera.position.constructor(0.001 * l, 0.001 * s, -0.001 * p).applyMatrix4(m)
            .project(stage.camera);
        return [canvas.left + (v.x + 1) / 2 * canvas.width, canvas.top + (1 - v.y) / 2 * canvas.height];
    });
}"""


WORLD_OF = """([l, p, s]) => {
    const { stage } = theatrum;
    const v = new stage.camera.position.constructor(0.001 * l, 0.001 * s, -0.001 * p);
    return v.applyMatrix4(stage.modelFrame.matrixWorld).toArray();
}"""


def greys_at(client: Client, png: bytes, lps: np.ndarray) -> np.ndarray:
    """The screenshot's grey level (mean of R, G, B) where each LPS point shows on the page."""
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float64).mean(axis=2)
    scale = image.shape[1] / client.js("window.innerWidth")
    screen = np.asarray(client.js(SCREEN_OF, lps.tolist())) * scale
    return np.asarray([image[int(y), int(x)] for x, y in screen])


def check_cross_section(client: Client, api, room_id: str, plane: dict, name: str) -> None:
    """The page shows the skull's cross-section on `plane`: bone pixels white, brain dark grey."""
    rng = np.random.default_rng(7)
    hu = hu_of(api, room_id, plane)
    bone = lps_of(plane, samples(hu, BONE_HU, SAMPLES, rng), hu.shape)
    brain = lps_of(plane, samples(hu, BRAIN_HU, SAMPLES, rng), hu.shape)
    client.js("theatrum.stage.invalidate()")
    client.page.wait_for_timeout(300)
    png = client.page.screenshot(path=ARTIFACTS / f"slice-{name}.png")
    bone_grey, brain_grey = greys_at(client, png, bone), greys_at(client, png, brain)
    # Bone window 1800/400: 600 HU and more is 156+ of 255; 20-60 HU is 73-79.
    assert (bone_grey > 130).mean() >= 0.9, f"{name}: bone shows as {np.round(bone_grey)}"
    assert ((brain_grey > 40) & (brain_grey < 120)).mean() >= 0.9, f"{name}: brain shows as {np.round(brain_grey)}"


def test_a_coronal_plane_shows_the_skull_cross_section_on_both_pages(pages, served):
    _, api, room = served
    surgeon, student = pages
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert student.page.locator("#slice-coronal").is_disabled()
    assert student.page.inner_text("#slice-reason") == "students may not set slice planes"
    surgeon.page.click("#slice-coronal")
    surgeon.page.wait_for_function("theatrum.room.state.slices.size === 1", timeout=10_000)
    plane = plane_of(surgeon)
    assert plane["u"] == [1.0, 0.0, 0.0] and plane["v"] == [0.0, 0.0, -1.0]
    assert (plane["window"], plane["level"]) == (1800.0, 400.0)  # the CT default: bone
    for name, client in (("surgeon", surgeon), ("student", student)):
        wait_image(client, plane)
        assert client.js("theatrum.stage.clipPlanes.length") == 1  # the cut on the viewer's side
        check_cross_section(client, api, room["room"]["id"], plane, f"{name}-coronal")


def test_the_surgeon_drags_the_plane_and_it_moves_on_both_pages(pages, served):
    _, api, room = served
    surgeon, student = pages
    before = plane_of(surgeon)
    surgeon.page.keyboard.press("9")  # the slice tool (the toolbar's ninth)
    assert surgeon.js("theatrum.toolbox.active") == "slice"
    centre = surgeon.js(SCREEN_OF, [before["origin"]])[0]
    mouse = surgeon.page.mouse
    mouse.move(*centre)
    mouse.down()
    for step in range(1, 9):
        mouse.move(centre[0], centre[1] - 5 * step)  # up: along the normal (posterior), half a mm a pixel
        surgeon.page.wait_for_timeout(60)
    mouse.up()
    surgeon.page.wait_for_function("(y) => theatrum.room.state.slices.values().next().value.origin[1] > y + 15",
                                   arg=before["origin"][1], timeout=10_000)
    after = plane_of(surgeon)
    assert after["origin"][1] - before["origin"][1] == pytest.approx(20.0, abs=0.5)
    assert after["origin"][0] == before["origin"][0] and after["origin"][2] == before["origin"][2]
    for name, client in (("surgeon", surgeon), ("student", student)):
        wait_image(client, after)
        assert plane_of(client) == after
        check_cross_section(client, api, room["room"]["id"], after, f"{name}-moved")
    # A point placed on the slice's image is an LPS point on the plane, like any other.
    surgeon.page.keyboard.press("1")
    brain = lps_of(after, samples(hu_of(api, room["room"]["id"], after), BRAIN_HU, 1, np.random.default_rng(3)),
                   (512, 512))[0]
    x, y = surgeon.js(SCREEN_OF, [brain.tolist()])[0]
    surgeon.page.mouse.click(x, y)
    surgeon.page.wait_for_function("theatrum.room.state.annotations.size === 1", timeout=10_000)
    point = np.asarray(surgeon.js("[...theatrum.room.state.annotations.values()][0].position"))
    normal = np.cross(after["u"], after["v"])
    assert abs((point - after["origin"]) @ normal) < 0.5  # mm: on the plane
    assert np.linalg.norm(point - brain) < 3  # where the click was
    student.page.locator("#annotations li[data-type='point']").wait_for(timeout=5000)
    surgeon.js("""() => {
        const { stage, desktop } = theatrum;
        const c = stage.patientCentre();
        stage.camera.position.set(c.x - 0.2, c.y + 0.16, c.z + 0.3);
        stage.aimAt(c, desktop.controls);
    }""")
    surgeon.page.wait_for_timeout(300)
    surgeon.page.screenshot(path=ARTIFACTS / "slice-room.png")
    # The student cannot: the tool is refused, with the server's words.
    refusal = student.js("(id) => theatrum.room.op('slice.set', {id, level: 40}).then(() => 'ok', (e) => e.message)",
                         after["id"])
    assert refusal == "students may not set slice planes"


def test_an_instructor_carries_a_plane_with_a_controller(browser, served):
    server, _, room = served
    url = f"http://127.0.0.1:{server.port}"
    instructor = Client(browser, url, f"invite={room['invites']['instructor']['token']}&xr-emulate=quest3")
    try:
        instructor.wait_ready()
        instructor.page.wait_for_function("theatrum.room.state.slices.size === 1 && theatrum.tools.slice.series")
        before = plane_of(instructor)
        instructor.page.keyboard.press("9")
        instructor.page.click("#enter-vr")
        instructor.page.wait_for_function("theatrum.xr.presenting", polling=50)
        centre = instructor.js(WORLD_OF, before["origin"])
        place(instructor, "head", [centre[0], centre[1] + 0.05, centre[2] + 0.3], centre)
        grip = [centre[0] + 0.05, centre[1], centre[2] + 0.25]
        place(instructor, "right", grip, centre)
        next_frame(instructor)
        hold(instructor, "right", "trigger", True)
        place(instructor, "right", [grip[0], grip[1] + 0.02, grip[2]], [centre[0], centre[1] + 0.02, centre[2]])
        next_frame(instructor)
        next_frame(instructor)
        hold(instructor, "right", "trigger", False)
        moved = "(z) => Math.abs(theatrum.room.state.slices.values().next().value.origin[2] - z - 20) < 1"
        instructor.page.wait_for_function(moved, arg=before["origin"][2], polling=50, timeout=10_000)
        after = plane_of(instructor)
        assert math.dist(after["origin"][:2], before["origin"][:2]) < 1  # carried up 2 cm, nothing else
        instructor.js("theatrum.xr.exit()")
    finally:
        instructor.close()
    assert not instructor.errors, instructor.errors

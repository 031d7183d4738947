"""Named structures in a real browser, with two participants at once: the sample phantom (as `make run` writes
it) and a NIfTI label map of its parts (its generator knows them: sample_data/phantom.py `label_map`) with a
labels.json of names and colours, uploaded into its study and meshed one node per structure. An instructor and
a student see the file's names and colours in their panels and on screen (pixels of each colour counted); the
instructor hides the eyes and both pages stop drawing them; the instructor grows the skull with the Grow tool (a
click on the bone) and it appears on both pages; a name shows on hover, on a desktop and in a headset. The
screenshots go to tests/artifacts/structures-*.png.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import zipfile

import numpy as np
import pytest
from browsing import (  # noqa: F401 (browser_fixture: the fixture `browser`)
    Client,
    browser_fixture,
    build_meshes,
    next_frame,
    phantom_room,
    place,
)
from conftest import REPO
from PIL import Image

ARTIFACTS = REPO / "tests" / "artifacts"
# The parts labelled, in label order: (the phantom's part, the name in labels.json, its colour).
PARTS = [
    ("eye", "Eyes", "#2080ff"),
    ("lateral ventricle", "Lateral ventricles", "#20d040"),
    ("optic nerve", "Optic nerves", "#ffd000"),
    ("lens", "Lenses", "#ff30c0"),
]


def phantom_module():
    spec = importlib.util.spec_from_file_location("sample_phantom", REPO / "sample_data" / "phantom.py")
    module = sys.modules.get(spec.name)
    if module is None:
        module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def label_map_zip() -> bytes:
    """The phantom's parts as one NIfTI label map on its series' grid (RAS affine from the series' IPP/IOP),
    with a labels.json beside it, zipped."""
    import nibabel as nib

    phantom = phantom_module()
    params = phantom.PhantomParameters().resolved()
    labels = phantom.label_map(params, [part for part, _, _ in PARTS])
    geometry = phantom.slice_geometry(params)
    drow, dcol = params.pixel_spacing
    lps = np.eye(4)
    lps[:3, 0] = geometry.row_direction * dcol  # i: along a row (columns)
    lps[:3, 1] = geometry.column_direction * drow  # j: down a column (rows)
    lps[:3, 2] = geometry.positions[1] - geometry.positions[0]  # k: the next slice
    lps[:3, 3] = geometry.positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS
    image = nib.Nifti1Image(np.ascontiguousarray(labels.transpose(2, 1, 0)), affine)
    table = {str(n): {"name": name, "color": color} for n, (_, name, color) in enumerate(PARTS, start=1)}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("phantom-parts.nii.gz", gzip_nifti(image))
        z.writestr("labels.json", json.dumps(table))
    return out.getvalue()


def gzip_nifti(image) -> bytes:
    import gzip

    return gzip.compress(image.to_bytes(), compresslevel=1)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server with the sample phantom, its bone surface, its parts as named structures, and a training room."""
    segmentations = []

    def prepare(api, server, study):
        r = api.post(f"/api/studies?study={study['id']}", label_map_zip(), headers={"Content-Type": "application/zip"})
        assert r.status in (200, 201), (r.status, r.body[:2000])
        segmentations.extend(r.json()["segmentations"])
        parts = build_meshes(api, server, study["id"], {"segmentation": segmentations[0]["id"]})
        return [parts[0]["id"]]

    with phantom_room(tmp_path_factory, title="Sample phantom, structures", prepare=prepare) as (server, api, _, room):
        (segmentation,) = segmentations
        yield server, api, room, segmentation


@pytest.fixture(scope="module")
def pages(browser, served):
    server, _, room, _ = served
    url = f"http://127.0.0.1:{server.port}"
    invites = room["invites"]
    instructor = Client(browser, url, f"invite={invites['instructor']['token']}", name="Dr Vesalius")
    student = Client(browser, url, f"invite={invites['student']['token']}", name="Ada")
    for client in (instructor, student):
        client.wait_ready()
    yield instructor, student
    for client in (instructor, student):
        client.close()
    for client in (instructor, student):
        assert not client.errors, client.errors


FRONT = """() => {
    // Both cameras in front of the face, looking at the eyes (a seat may be beside or behind the head).
    const { stage, desktop } = theatrum;
    const eye = new stage.camera.position.constructor(0, 0.004, 0.064).applyMatrix4(stage.modelFrame.matrixWorld);
    const front = new stage.camera.position.constructor(0, 0.004, 0.38).applyMatrix4(stage.modelFrame.matrixWorld);
    desktop.controls.target.copy(eye);
    stage.camera.position.copy(front);
    desktop.controls.update();
    stage.camera.updateMatrixWorld(); // for the projections the test makes before the next frame
    stage.invalidate();
}"""


def colour_pixels(png: bytes, colour: str, *, tolerance: float = 0.22) -> int:
    """How many pixels are lit versions of `colour` (the same hue and saturation under any shading)."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float64) / 255
    target = np.asarray([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float64) / 255
    brightness = rgb.max(axis=2, keepdims=True)
    lit = brightness[..., 0] > 0.08
    chroma = rgb / np.maximum(brightness, 1e-6)  # the colour with its shading divided out
    close = np.linalg.norm(chroma - target / target.max(), axis=2) < tolerance
    return int((lit & close).sum())


def shoot(client: Client, name: str) -> bytes:
    client.js("theatrum.stage.invalidate()")
    client.page.wait_for_timeout(250)
    return client.page.locator(".viewport").screenshot(path=ARTIFACTS / f"structures-{name}.png")


def rows(client: Client) -> list[dict]:
    return client.js("""[...document.querySelectorAll('#structures li')].map((li) => ({
        id: li.dataset.id, text: li.querySelector('.name').textContent.trim(),
        colour: li.querySelector('.swatch').style.background,
        shown: li.querySelector('.visible').checked, disabled: li.querySelector('.visible').disabled }))""")


def rgb_of(colour: str) -> str:
    return "rgb(" + ", ".join(str(int(colour[i:i + 2], 16)) for i in (1, 3, 5)) + ")"


def test_both_pages_list_the_files_structures_and_draw_them_in_their_colours(pages, served):
    instructor, student = pages
    _, _, _, segmentation = served
    assert [(s["name"], s["color"]) for s in segmentation["structures"]] == [(n, c) for _, n, c in PARTS]
    for client, role in ((instructor, "instructor"), (student, "student")):
        listed = rows(client)
        assert [(r["text"], r["colour"]) for r in listed] == [(n, rgb_of(c)) for _, n, c in PARTS], role
        assert all(r["shown"] for r in listed)
        # The GLB's nodes carry the names: one drawn mesh per structure, in the file's colour.
        drawn = client.js("""theatrum.meshes.tissues.filter((t) => Number.isInteger(t.mesh.userData.structure))
            .map((t) => [t.mesh.userData.name, '#' + t.mesh.material.color.getHexString()])""")
        assert sorted(map(tuple, drawn)) == sorted((n, c) for _, n, c in PARTS), role
        client.js(FRONT)
        png = shoot(client, f"start-{role}")
        eyes = colour_pixels(png, PARTS[0][2])
        assert eyes >= 150, f"{role}: {eyes} pixels of the eyes' colour (see structures-start-{role}.png)"
    # The student sees the list, read-only, and is told why.
    assert all(r["disabled"] for r in rows(student)) and not any(r["disabled"] for r in rows(instructor))
    assert "students may not" in student.js("document.querySelector('#structures-reason').textContent")


def test_hiding_a_structure_on_one_page_hides_it_on_both(pages):
    instructor, student = pages
    eyes = next(r for r in rows(instructor) if r["text"] == "Eyes")
    instructor.page.get_by_label("Show Eyes").click()
    for client in (instructor, student):
        client.page.wait_for_function(
            "(id) => theatrum.room.state.structures.get(id).visible === false", arg=eyes["id"], timeout=10_000)
        assert client.js("""(id) => theatrum.structures.tissuesOf(id).every((t) => !t.mesh.visible)""", eyes["id"])
        assert not next(r for r in rows(client) if r["id"] == eyes["id"])["shown"]
        client.js(FRONT)
        left = colour_pixels(shoot(client, f"eyes-hidden-{client.js('theatrum.room.state.me().role')}"), PARTS[0][2])
        assert left < 20, f"{left} pixels of the hidden eyes' colour are still drawn"
    # Half see-through, then shown again: the same on both pages.
    instructor.page.get_by_label("Opacity of Eyes").fill("0.5")
    instructor.page.get_by_label("Show Eyes").click()
    for client in (instructor, student):
        client.page.wait_for_function(
            """(id) => { const s = theatrum.room.state.structures.get(id); return s.visible && s.opacity === 0.5; }""",
            arg=eyes["id"], timeout=10_000)
        assert client.js("""(id) => theatrum.structures.tissuesOf(id)
            .every((t) => t.mesh.visible && t.mesh.material.transparent && t.mesh.material.opacity === 0.5)""",
                         eyes["id"])
    # A student may not (the server says so too).
    refused = student.js("""(id) => theatrum.room.op('structure.style', { mesh: id, visible: false })
        .then(() => null, (e) => e.message)""", eyes["id"])
    assert refused == "students may not show or hide structures"


def test_the_name_of_a_structure_shows_under_the_mouse(pages):
    instructor, _ = pages
    instructor.js(FRONT)
    at = instructor.js("""() => {
        const { stage } = theatrum;
        const canvas = stage.renderer.domElement.getBoundingClientRect();
        // The right eye's front (LPS -32, -75, 4 mm): glTF = 0.001 (L, S, -P).
        const v = new stage.camera.position.constructor(-0.032, 0.004, 0.075)
            .applyMatrix4(stage.modelFrame.matrixWorld).project(stage.camera);
        return [canvas.left + (v.x + 1) / 2 * canvas.width, canvas.top + (1 - v.y) / 2 * canvas.height];
    }""")
    instructor.page.mouse.move(at[0] - 30, at[1])
    instructor.page.mouse.move(*at, steps=5)

    instructor.page.wait_for_function("!document.querySelector('#hover-name').hidden", timeout=5_000)
    assert instructor.js("document.querySelector('#hover-name').textContent") in ("Eyes", "Lenses")
    instructor.page.mouse.move(5, 5)
    instructor.page.wait_for_function("document.querySelector('#hover-name').hidden", timeout=5_000)


def test_a_structure_grown_with_a_click_on_the_bone_appears_on_both_pages(pages):
    instructor, student = pages
    instructor.js(FRONT)
    before = student.js("theatrum.room.state.structures.size")
    # The forehead (LPS 0, -95, 40 mm is in front of it): the first bone the ray meets is the frontal bone.
    at = instructor.js("""() => {
        const { stage } = theatrum;
        const canvas = stage.renderer.domElement.getBoundingClientRect();
        const v = new stage.camera.position.constructor(0, 0.045, 0.05)
            .applyMatrix4(stage.modelFrame.matrixWorld).project(stage.camera);
        return [canvas.left + (v.x + 1) / 2 * canvas.width, canvas.top + (1 - v.y) / 2 * canvas.height];
    }""")
    instructor.page.click("[data-tool='grow'] button")
    instructor.page.fill("#label-input", "Skull")
    instructor.page.mouse.click(*at)
    for client in (instructor, student):
        client.page.wait_for_function(
            f"theatrum.room.state.structures.size === {before + 1}", timeout=180_000, polling=250)
        skull = client.js("[...theatrum.room.state.structures.values()].find((s) => s.name === 'Skull')")
        assert skull is not None and skull["volume_ml"] > 100, skull
        client.page.wait_for_function(
            "(id) => theatrum.structures.tissuesOf(id).length > 0", arg=skull["id"], timeout=60_000)
        assert any(r["text"] == "Skull" for r in rows(client))
        client.js(FRONT)
        png = shoot(client, f"grown-{client.js('theatrum.room.state.me().role')}")
        assert colour_pixels(png, skull["color"], tolerance=0.15) >= 500
    instructor.page.screenshot(path=ARTIFACTS / "structures-room.png")  # the room with its named structures


def test_a_headset_shows_the_name_of_the_structure_it_points_at(pages, served, browser):
    """A third participant, in an emulated Quest 3, with the instructor and the student still there: the right
    controller aimed at an eye shows "Eyes" above the reticle; aimed at the air, no name. All three pages draw
    the grown skull in its colour meanwhile."""
    server, _, room, _ = served
    url = f"http://127.0.0.1:{server.port}"
    query = f"invite={room['invites']['instructor']['token']}&xr-emulate=quest3"
    headset = Client(browser, url, query, name="Dr Colombo")
    try:
        headset.wait_ready()
        headset.page.click("#enter-vr")
        headset.page.wait_for_function("theatrum.xr.presenting", timeout=20_000)
        eye, behind = headset.js("""() => {
            const { stage } = theatrum;
            const V = stage.camera.position.constructor;
            const m = stage.modelFrame.matrixWorld;
            // The right eye above its lens (LPS -32, -64, 13 mm: glTF 0.001 (L, S, -P)), and a point in front.
            const at = (z) => new V(-0.032, 0.013, z).applyMatrix4(m).toArray();
            return [at(0.064), at(0.6)];
        }""")
        place(headset, "head", [behind[0], behind[1] + 0.1, behind[2]], eye)
        place(headset, "right", [behind[0], behind[1] - 0.1, behind[2]], eye)
        named = "theatrum.xr.hud.entries.get('name')?.text === 'Eyes'"
        headset.page.wait_for_function(named, polling=100, timeout=20_000)
        skull = headset.js("[...theatrum.room.state.structures.values()].find((s) => s.name === 'Skull')")
        next_frame(headset)
        # The headset's view is the emulator's canvas over the page: the skull counts in pixels.
        seen = colour_pixels(headset.page.screenshot(path=ARTIFACTS / "structures-headset.png"), skull["color"],
                             tolerance=0.15)
        assert seen >= 150, f"the headset sees {seen} skull pixels (see structures-headset.png)"
        for client in pages:
            client.js(FRONT)
            role = client.js("theatrum.room.state.me().role")
            seen = colour_pixels(shoot(client, f"with-headset-{role}"), skull["color"], tolerance=0.15)
            assert seen >= 500, f"{role}: {seen} skull pixels with the headset in the room"
        place(headset, "right", [behind[0], behind[1] - 0.1, behind[2]], [behind[0], behind[1] + 2, behind[2]])
        headset.page.wait_for_function("!theatrum.xr.hud.has('name')", polling=100, timeout=20_000)
    finally:
        headset.close()
    assert not headset.errors, headset.errors

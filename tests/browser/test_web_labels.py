"""Labels and markers that read at a glance (issue 11, point 6), on two pages at once in a real browser with the
sample phantom's bone: a label whose point is behind the skull is drawn faintly, one in front in full (the
label boxes' dark pixels counted in the screenshot); labels of points close together do not cover each other
on either page (their rectangles as drawn); a point's marker is several pixels wide at the default distance.
Screenshots: tests/artifacts/labels-*.png.
"""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from browsing import (  # noqa: F401 (browser_fixture: the fixture `browser`)
    Client,
    browser_fixture,
    phantom_room,
)
from conftest import REPO
from PIL import Image

ARTIFACTS = REPO / "tests" / "artifacts"
# On the skull's outer table at z = 40 mm (the cranium: centre (0, 8, 18) mm, radii (70, 90, 76) mm).
FRONT_LEFT = [-30.0, -69.0, 40.0]  # the forehead, right of the midline: faces a camera in front
BACK_RIGHT = [30.0, 85.0, 40.0]  # the back of the head: hidden from the front by the skull
CLUSTER = [[-2.0 + dx, -77.9, 40.0 + dz] for dx, dz in ((0, 0), (2, 0), (0, 2), (2, 2), (1, 1))]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with phantom_room(tmp_path_factory, title="Labels") as (server, _, _, room):
        yield server, room


@pytest.fixture(scope="module")
def pages(browser, served):
    server, room = served
    url = f"http://127.0.0.1:{server.port}"
    clients = [Client(browser, url, f"invite={room['invites'][role]['token']}") for role in ("instructor", "student")]
    for client in clients:
        client.wait_ready()
    yield clients
    for client in clients:
        client.close()
    for client in clients:
        assert not client.errors, client.errors


FRONT_VIEW = """(distance) => {
    // In front of the face at `distance` metres from the skull's centre, looking at it.
    const { stage, desktop } = theatrum;
    const V = stage.camera.position.constructor;
    const m = stage.modelFrame.matrixWorld;
    const centre = new V(0, 0.018, -0.008).applyMatrix4(m);
    const front = new V(0, 0.018, -0.008 + distance).applyMatrix4(m);
    desktop.controls.target.copy(centre);
    stage.camera.position.copy(front);
    desktop.controls.update();
    stage.camera.updateMatrixWorld();
    stage.invalidate();
}"""

RECTS = """() => {
    // The annotation labels' rectangles as last drawn, in the canvas' pixels (tangent units through the
    // projection), keyed by annotation id.
    const { stage } = theatrum;
    const p = stage.camera.projectionMatrix.elements;
    const canvas = stage.renderer.domElement.getBoundingClientRect();
    const px = (x, y) => [(x * p[0] + 1) / 2 * canvas.width, (1 - y * p[5]) / 2 * canvas.height];
    const out = {};
    for (const r of theatrum.annotations.labelRects ?? []) {
        const [x0, y1] = px(r.x0, r.y0);
        const [x1, y0] = px(r.x1, r.y1);
        out[r.key] = [x0, y0, x1, y1];
    }
    return out;
}"""


def place_points(client: Client, points: list[list[float]], labels: list[str]) -> list[str]:
    ids = []
    for position, label in zip(points, labels, strict=True):
        ack = client.js("""([position, label]) => theatrum.room.op('annotation.create',
            { type: 'point', position, label })""", [position, label])
        ids.append(f"a{ack['seq']}")
    return ids


def settle(client: Client, ids: list[str]) -> None:
    client.page.wait_for_function("(ids) => ids.every((id) => theatrum.room.state.annotations.has(id))", arg=ids)
    client.js("theatrum.stage.invalidate()")
    client.page.wait_for_timeout(300)


def dark_share(png: bytes, rect: list[float]) -> float:
    """The share of a label rectangle's pixels (its middle 70 %) that are the label box's near-black."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    x0, y0, x1, y1 = rect
    mx, my = (x1 - x0) * 0.15, (y1 - y0) * 0.15
    box = rgb[int(y0 + my):int(y1 - my), int(x0 + mx):int(x1 - mx)]
    assert box.size, rect
    return float((box.max(axis=2) < 70).mean())


def test_a_label_behind_the_anatomy_is_faint_and_one_in_front_is_not(pages):
    instructor = pages[0]
    front, back = place_points(instructor, [FRONT_LEFT, BACK_RIGHT], ["Front", "Back"])
    for client in pages:
        settle(client, [front, back])
        client.js(FRONT_VIEW, 0.45)
        settle(client, [front, back])
        role = client.js("theatrum.room.state.me().role")
        png = client.page.locator("#view-canvas").screenshot(path=ARTIFACTS / f"labels-depth-{role}.png")
        rects = client.js(RECTS)
        shown, hidden = dark_share(png, rects[front]), dark_share(png, rects[back])
        assert shown > 0.45, f"{role}: the front label is {shown:.0%} label box (see labels-depth-{role}.png)"
        assert hidden < 0.15, f"{role}: the hidden label is {hidden:.0%} label box (see labels-depth-{role}.png)"
    instructor.js("(ids) => Promise.all(ids.map((id) => theatrum.room.op('annotation.delete', { id })))", [front, back])


def test_labels_of_points_close_together_do_not_cover_each_other(pages):
    instructor = pages[0]
    ids = place_points(instructor, CLUSTER, [f"Foramen {n}" for n in "ABCDE"])
    for client in pages:
        settle(client, ids)
        client.js(FRONT_VIEW, 0.45)
        settle(client, ids)
        rects = client.js(RECTS)
        assert set(ids) <= set(rects)
        for a, b in itertools.combinations(ids, 2):
            ra, rb = rects[a], rects[b]
            overlap = min(ra[2], rb[2]) - max(ra[0], rb[0]) > 0.5 and min(ra[3], rb[3]) - max(ra[1], rb[1]) > 0.5
            assert not overlap, (a, ra, b, rb)
        # They were stacked: some label moved up from its point (within 5 mm, the rectangles would cover).
        assert client.js("Math.max(...theatrum.annotations.labels.geometry.attributes.stack.array)") > 0
        role = client.js("theatrum.room.state.me().role")
        client.page.locator("#view-canvas").screenshot(path=ARTIFACTS / f"labels-cluster-{role}.png")
    instructor.js("(ids) => Promise.all(ids.map((id) => theatrum.room.op('annotation.delete', { id })))", ids)


def test_a_point_marker_is_several_pixels_wide_at_the_default_distance(pages):
    instructor, _ = pages
    (point,) = place_points(instructor, [FRONT_LEFT], ["Pterion"])
    for client in pages:
        settle(client, [point])
        client.js("theatrum.desktop.frame()")  # back to the seat: the default view
        settle(client, [point])
        diameter = client.js("""() => {
            const { stage, annotations } = theatrum;
            const m = annotations.markers;
            const local = new stage.camera.matrixWorld.constructor();
            m.getMatrixAt(0, local);
            const world = local.premultiply(m.matrixWorld);
            const centre = new stage.camera.position.constructor().setFromMatrixPosition(world);
            const radius = world.getMaxScaleOnAxis();
            const distance = centre.distanceTo(stage.camera.getWorldPosition(new stage.camera.position.constructor()));
            const focal = stage.camera.projectionMatrix.elements[5] * stage.renderer.domElement.clientHeight / 2;
            return 2 * radius / distance * focal;
        }""")
        assert diameter >= 6, f"the marker is {diameter:.1f} px wide at the default distance"

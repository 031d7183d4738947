"""Accessible and small screens (issue 11, point 7), in a real browser on a real server with the sample phantom:
axe-core (web-client/node_modules, npm) finds no serious or critical violation in the lobby and in the room;
the keyboard reaches every control (the upload's file and folder pickers included) and the 3D view; every input
has a label; on a 390 px wide phone screen the room keeps a usable 3D view with its panels collapsed behind
buttons; after an upload every study's preview still shows.
"""

from __future__ import annotations

import pytest
from browsing import (  # noqa: F401 (browser_fixture: the fixture `browser`)
    Client,
    bone_fraction,
    browser_fixture,
    phantom_room,
)
from conftest import DICOM, REPO, require_path

ARTIFACTS = REPO / "tests" / "artifacts"
AXE = REPO / "web-client" / "node_modules" / "axe-core" / "axe.min.js"
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with phantom_room(tmp_path_factory, title="Accessible class") as served:
        yield served


def axe_violations(client: Client) -> list[dict]:
    """axe-core's serious and critical violations on the page as it is now (WCAG 2 A and AA rules)."""
    client.page.add_script_tag(path=str(require_path(AXE, "axe-core (npm ci in web-client)")))
    found = client.js("""async () => {
        const tags = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'];
        const result = await axe.run(document, { runOnly: { type: 'tag', values: tags } });
        return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ')) }));
    }""")
    return [v for v in found if v["impact"] in ("serious", "critical")]


def lobby_page(browser, server, **options) -> Client:
    lobby = Client(browser, f"http://127.0.0.1:{server.port}", f"token={server.token}", **options)
    lobby.page.locator("li.study .preview[data-loaded='true']").first.wait_for(timeout=60_000)
    return lobby


def test_the_lobby_has_no_serious_accessibility_violation(served, browser):
    server, _, _, _ = served
    lobby = lobby_page(browser, server)
    try:
        lobby.page.locator("#rooms li.room button.show-invites").first.click()
        lobby.page.locator("#rooms .invite").first.wait_for()
        violations = axe_violations(lobby)
        assert violations == [], violations
        assert not lobby.errors, lobby.errors
    finally:
        lobby.close()


def test_the_room_has_no_serious_accessibility_violation(served, browser):
    server, _, _, room = served
    url = f"http://127.0.0.1:{server.port}"
    # Someone came and went: the list shows an absent participant too (drawn fainter, still legible).
    gone = Client(browser, url, f"invite={room['invites']['student']['token']}", name="Gone")
    gone.wait_ready()
    gone.close()
    pages = [Client(browser, url, f"invite={room['invites'][role]['token']}") for role in ("instructor", "student")]
    try:
        for client in pages:
            client.wait_ready()
            client.page.wait_for_selector("#participants li.absent")
        for client in pages:  # both at once, each seeing the skull from its seat (not the other's head)
            share = bone_fraction(client.page.locator("#view-canvas").screenshot(), box=0.6)
            assert share > 0.01, f"{share:.1%} of the view is bone"
            violations = axe_violations(client)
            assert violations == [], (client.js("theatrum.room.state.me().role"), violations)
            assert not client.errors, client.errors
    finally:
        for client in pages:
            client.close()


UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
    .filter((e) => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
        && !e.getAttribute('aria-labelledby'))
    .map((e) => e.id || e.className || e.outerHTML.slice(0, 80))"""

FOCUSABLE = """() => [...document.querySelectorAll('button, input, select, textarea, a[href], canvas, [tabindex]')]
    .filter((e) => !e.disabled && e.tabIndex >= 0 && e.getClientRects().length > 0
        && getComputedStyle(e).visibility !== 'hidden')
    .map((e) => e.id || e.getAttribute('aria-label') || e.className || e.tagName)"""


def tab_through(client: Client, limit: int = 400) -> list[str]:
    """What the Tab key visits, in order, from the top of the page until it comes back round."""
    client.page.evaluate("document.activeElement && document.activeElement.blur()")
    seen: list[str] = []
    for _ in range(limit):
        client.page.keyboard.press("Tab")
        name = client.js("""(() => { const e = document.activeElement; if (e === document.body) return null;
            return e.id || e.getAttribute('aria-label') || e.className || e.tagName; })()""")
        if name is None or (seen and name == seen[0]):
            break
        seen.append(name)
    return seen


def test_the_keyboard_reaches_every_control_and_every_input_has_a_label(served, browser):
    server, _, _, room = served
    lobby = lobby_page(browser, server)
    student = Client(browser, f"http://127.0.0.1:{server.port}", f"invite={room['invites']['instructor']['token']}")
    try:
        assert lobby.js(UNLABELLED) == []
        reached = tab_through(lobby)
        assert "upload-files" in reached and "upload-folder-button" in reached  # the upload, by keyboard
        missing = [name for name in lobby.js(FOCUSABLE) if name not in reached]
        assert missing == [], missing

        student.wait_ready()
        assert student.js(UNLABELLED) == []
        reached = tab_through(student)
        assert "view-canvas" in reached  # the 3D view takes the focus (and then the number keys pick tools)
        missing = [name for name in student.js(FOCUSABLE) if name not in reached]
        assert missing == [], missing
        student.page.focus("#view-canvas")
        student.page.keyboard.press("2")
        assert student.js("theatrum.toolbox.active") == "measure"
    finally:
        lobby.close()
        student.close()


def test_a_390_px_phone_screen_keeps_a_usable_room(served, browser):
    server, _, _, room = served
    phone = Client(browser, f"http://127.0.0.1:{server.port}", f"invite={room['invites']['student']['token']}",
                   viewport=PHONE)
    try:
        phone.wait_ready()
        box = phone.page.locator("#viewport").bounding_box()
        assert box["width"] >= 360 and box["height"] >= 300, box  # the 3D view, not a 1 px strip
        share = bone_fraction(phone.page.locator("#view-canvas").screenshot(), box=0.6)
        assert share > 0.01, f"the phone's view is {share:.1%} bone"
        assert not phone.page.locator(".right").is_visible()  # the panels are collapsed
        phone.page.click("#toggle-panels")
        assert phone.page.locator(".right").is_visible()
        assert phone.page.locator("#participants").is_visible()
        violations = axe_violations(phone)  # at this size too, panels open
        assert violations == [], violations
        phone.page.click("#toggle-panels")
        phone.page.click("#toggle-tools")
        assert phone.page.locator("#toolbar").is_visible()
        phone.page.screenshot(path=ARTIFACTS / "phone-room.png")
        assert not phone.errors, phone.errors
    finally:
        phone.close()


def test_every_preview_still_shows_after_an_upload(served, browser):
    server, _, _, _ = served
    lobby = lobby_page(browser, server)
    try:
        files = sorted(p for p in require_path(DICOM / "ct-head-phantom-philips" / "DICOM" / "S21570" / "S2010",
                                               "the Philips phantom").iterdir() if p.name != "DIRFILE")
        lobby.page.set_input_files("#upload-input", [str(p) for p in files])
        lobby.page.locator("#upload-result", has_text="new instance").wait_for(timeout=120_000)
        lobby.page.wait_for_function("document.querySelectorAll('li.study').length === 2")
        # The study that had meshes keeps its preview, drawn (not an empty box).
        preview = lobby.page.locator("li.study .preview[data-loaded='true']")
        preview.first.wait_for(timeout=30_000)
        assert preview.first.is_visible()
        assert lobby.js("""[...document.querySelectorAll('li.study .preview[data-loaded="true"] canvas')]
            .every((c) => c.width > 50 && c.height > 50)""")
        assert not lobby.errors, lobby.errors
    finally:
        lobby.close()

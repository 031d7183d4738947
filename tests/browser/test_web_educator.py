"""The educator's workflows in the UI, not only in the API (issue 11, point 5), in a real browser on a real
server with the sample phantom: an instructor removes a student from the participants list (after a
confirmation) while the student's page is open; the lobby exports a room's ledger bundle that `theatrum verify`
accepts, closes a room only after asking, cancels a running reconstruction and deletes a study after asking;
with a PACS configured (a real Orthanc), the lobby searches it and imports a study.
"""

from __future__ import annotations

import subprocess

import pydicom
import pytest
from browsing import (  # noqa: F401 (browser_fixture: the fixture `browser`)
    Client,
    bone_fraction,
    browser_fixture,
    phantom_room,
    start_server,
)
from conftest import REPO
from orthanc import orthanc_fixture, phantom_files  # noqa: F401 (orthanc_fixture: the fixture `orthanc`)
from serverproc import THEATRUM

ARTIFACTS = REPO / "tests" / "artifacts"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with phantom_room(tmp_path_factory, title="Anatomy class") as served:
        yield served


def test_an_instructor_removes_a_student_from_the_participants_list(served, browser):
    server, _, _, room = served
    url = f"http://127.0.0.1:{server.port}"
    instructor = Client(browser, url, f"invite={room['invites']['instructor']['token']}", name="Dr Fabrica")
    student = Client(browser, url, f"invite={room['invites']['student']['token']}", name="Ben")
    try:
        for client in (instructor, student):
            client.wait_ready()
        for client in (instructor, student):  # both in the room at once, each seeing the skull from its seat
            share = bone_fraction(client.page.locator("#view-canvas").screenshot(), box=0.6)
            assert share > 0.01, f"{share:.1%} of the view is bone"
        ben = student.js("theatrum.room.state.you.id")
        row = instructor.page.locator(f"#participants li[data-id='{ben}']")
        row.locator("button.kick").click()
        assert "Remove Ben from the room?" in row.locator(".question").inner_text()
        row.locator("button.kick-no").click()  # changed their mind: nothing happens
        instructor.page.wait_for_timeout(300)
        assert not instructor.js("(id) => theatrum.room.state.participants.get(id).kicked", ben)
        row.locator("button.kick").click()
        # The room moves on while the instructor decides (the list is rebuilt): the question stays asked.
        seq = student.js("theatrum.room.op('annotation.create', { type: 'point', position: [0, -80, 40] })")["seq"]
        instructor.page.wait_for_function("(seq) => theatrum.room.state.seq >= seq", arg=seq)
        assert "Remove Ben from the room?" in row.locator(".question").inner_text()
        row.locator("button.kick-yes").click()
        instructor.page.wait_for_function("(id) => theatrum.room.state.participants.get(id).kicked", arg=ben)
        student.page.wait_for_function("theatrum.room.status === 'refused'", timeout=20_000)
        assert "removed" in student.page.locator("#toolbar .reason").first.inner_text()
        assert instructor.page.locator(f"#participants li[data-id='{ben}']").count() == 0
        assert not instructor.errors, instructor.errors
    finally:
        instructor.close()
        student.close()


def test_the_lobby_exports_a_verifiable_ledger_and_closes_a_room_only_after_asking(served, browser, tmp_path):
    server, api, _, room = served
    lobby = Client(browser, f"http://127.0.0.1:{server.port}", f"token={server.token}")
    try:
        item = lobby.page.locator(f"#rooms li[data-id='{room['room']['id']}']")
        item.wait_for()
        with lobby.page.expect_download() as download:
            item.locator("button.export-ledger").click()
        bundle = tmp_path / download.value.suggested_filename
        download.value.save_as(bundle)
        assert item.locator(".verify-hint").is_visible()
        assert "theatrum verify" in item.locator(".verify-hint").inner_text()
        checked = subprocess.run([str(THEATRUM), "verify", str(bundle)], capture_output=True, text=True, timeout=120)
        assert checked.returncode == 0, checked.stdout + checked.stderr

        item.locator("button.close-room").click()
        assert "Close the room for everyone?" in item.locator(".question").inner_text()
        item.locator("button.close-room-no").click()
        assert api.get(f"/api/rooms/{room['room']['id']}").json()["closed"] is False
        item.locator("button.close-room").click()
        item.locator("button.close-room-yes").click()
        lobby.page.locator(f"#rooms li[data-id='{room['room']['id']}'] button.replay-room").wait_for()
        assert api.get(f"/api/rooms/{room['room']['id']}").json()["closed"] is True
        lobby.page.screenshot(path=ARTIFACTS / "educator-lobby.png")
        assert not lobby.errors, lobby.errors
    finally:
        lobby.close()


def test_the_lobby_cancels_a_reconstruction_and_deletes_a_study_only_after_asking(served, browser):
    server, api, study, _ = served
    lobby = Client(browser, f"http://127.0.0.1:{server.port}", f"token={server.token}")
    try:
        card = lobby.page.locator(f"li.study[data-id='{study['id']}']")
        card.wait_for()
        for box in card.locator("input[name='preset']").all():
            box.check()
        card.locator("select.budget").select_option(index=card.locator("select.budget option").count() - 1)
        card.locator("input.largest-only").check()  # leave the head holder out (issue 11, point 6)
        card.locator("button.reconstruct").click()
        card.locator("button.cancel-job").click()
        card.locator(".job-progress[data-state='cancelled']").wait_for(timeout=30_000)
        assert not card.locator("button.cancel-job").is_visible()
        assert "cancelled" in card.locator(".job-progress").inner_text()
        job = lobby.js("(id) => theatrum.lobby.cards.get(id).job", study["id"])
        assert job["state"] == "cancelled" and job["params"]["largest_only"] is True

        card.locator("button.delete-study").click()
        assert "Delete the study" in card.locator(".question").inner_text()
        card.locator("button.delete-study-no").click()
        assert any(s["id"] == study["id"] for s in api.get("/api/studies").json()["studies"])
        card.locator("button.delete-study").click()
        card.locator("button.delete-study-yes").click()
        card.wait_for(state="detached")
        assert all(s["id"] != study["id"] for s in api.get("/api/studies").json()["studies"])
        assert not lobby.errors, lobby.errors
    finally:
        lobby.close()


@pytest.mark.pacs
def test_the_lobby_searches_the_pacs_and_imports_a_study(orthanc, browser, tmp_path):
    server = start_server(tmp_path / "data", [], env={"THEATRUM_PACS_URL": orthanc.dicomweb_url})
    lobby = Client(browser, f"http://127.0.0.1:{server.port}", f"token={server.token}")
    try:
        page = lobby.page
        page.locator("#pacs-section").wait_for()
        page.fill("#pacs-ModalitiesInStudy", "CT")
        page.click("#pacs-search")
        rows = page.locator("#pacs-results li")
        rows.first.wait_for(timeout=30_000)
        assert rows.count() == 2  # the Philips phantom's two studies
        text = page.locator("#pacs-results").inner_text()
        header = pydicom.dcmread(phantom_files()[0], stop_before_pixels=True)
        for value in (str(header.PatientName), str(header.PatientID), str(header.StudyInstanceUID)):
            assert value not in text  # de-identified summaries only
        rows.first.locator("button.pacs-import").click()
        page.locator("#studies li.study").first.wait_for(timeout=120_000)
        assert "Imported" in page.locator("#pacs-status").inner_text()
        assert len(server.api.get("/api/studies").json()["studies"]) == 1
        assert not lobby.errors, lobby.errors
    finally:
        lobby.close()
        if server.stop() is None:
            server.kill_group()


def test_the_lobby_shows_a_series_reconstruction_warnings(served, browser, tmp_path):
    """The Philips phantom with one slice moved 0.4 mm: its card says the spacing is uneven (issue 11, point 4)."""
    from conftest import write_uneven_philips
    from serverproc import zip_tree

    server, api, _, _ = served
    folder = write_uneven_philips(tmp_path / "uneven")
    study_id = api.upload_zip(zip_tree(folder))["study_id"]
    lobby = Client(browser, f"http://127.0.0.1:{server.port}", f"token={server.token}")
    try:
        warning = lobby.page.locator(f"li.study[data-id='{study_id}'] ul.warnings li")
        warning.first.wait_for(timeout=20_000)
        assert "uneven slice spacing" in warning.first.inner_text()
        assert not lobby.errors, lobby.errors
    finally:
        lobby.close()

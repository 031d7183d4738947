"""The web client through nginx in front of three server processes (tests/cluster.py: PostgreSQL, Redis, a
worker, docs/operations.md's nginx configuration).

Two pages, an instructor and a student, open the same room through nginx: each page's socket carries
`room=<id>`, both reach the process that serves the room (only one process takes it), each sees the other's
avatar and the annotation the other made, and both screenshots show the skull. When that process is killed
(kill -9), both pages come back through nginx on another process, with the state they had, and go on working.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from browsing import (  # noqa: F401 (browser_fixture: the fixture `browser`)
    TEST_TRIANGLES,
    Client,
    bone_fraction,
    browser_fixture,
)
from cluster import Cluster, cluster_on
from conftest import DICOM, REPO, require_path
from serverproc import zip_tree

REGULAR = DICOM / "ct-head-phantom-philips" / "DICOM" / "S21570" / "S2010"
ARTIFACTS = REPO / "tests" / "artifacts"


@pytest.fixture(scope="module")
def running(tmp_path_factory, postgres_server) -> Iterator[Cluster]:
    with cluster_on(postgres_server, tmp_path_factory.mktemp("webcluster")) as started:
        yield started


@pytest.fixture(scope="module")
def room(running: Cluster) -> dict:
    """A training room on the phantom's bone surface, made through nginx; {room, invites}."""
    api = running.api
    uploaded = api.upload_zip(zip_tree(require_path(REGULAR, "the Philips phantom")))
    response = api.post(f"/api/studies/{uploaded['study_id']}/meshes", {
        "series": uploaded["series"][0]["id"], "presets": ["bone"], "target_triangles": TEST_TRIANGLES})
    assert response.status == 202, response.body
    job = api.wait_job(response.json()["job"]["id"], lambda j: j["state"] in ("done", "failed", "cancelled"))
    assert job["state"] == "done", job
    created = api.post("/api/rooms", {"study_id": uploaded["study_id"], "mesh_ids": job["mesh_ids"],
                                      "mode": "training", "title": "Through nginx"})
    assert created.status == 201, created.body
    return created.json()


def _socket_query(client: Client) -> dict:
    return client.js("theatrum.room.socket.io.opts.query")


def test_two_pages_through_nginx_share_one_process_and_survive_its_death(browser, running, room):
    room_id = room["room"]["id"]
    invites = room["invites"]
    instructor = Client(browser, running.url, f"invite={invites['instructor']['token']}")
    student = Client(browser, running.url, f"invite={invites['student']['token']}")
    owner = None
    try:
        for client in (instructor, student):
            client.wait_ready(120_000)
            assert _socket_query(client) == {"room": room_id}
        owner = running.owner_of(room_id)
        took = [i for i, server in enumerate(running.servers) if f"room {room_id}: served here" in server.output()]
        assert owner is not None and took in ([owner], []), (owner, took)

        # Each sees the other: the avatar and the annotation.
        for me, other in ((instructor, student), (student, instructor)):
            other_id = other.js("theatrum.room.state.you.id")
            me.page.wait_for_function("(id) => theatrum.avatars.avatars.has(id)", arg=other_id, timeout=20_000)
        instructor.js("theatrum.room.op('annotation.create', {type: 'point', position: [1, 20, 760], "
                      "label: 'through nginx'})")
        student.page.locator("#annotations li", has_text="through nginx").wait_for(timeout=10_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for name, client in (("cluster-instructor", instructor), ("cluster-student", student)):
            png = client.page.screenshot(path=ARTIFACTS / f"{name}.png")
            assert bone_fraction(png) > 0.02, f"{name}: the skull is not in the picture"

        # The room's process dies: both pages come back through nginx, on another process, where they were.
        seq = student.js("theatrum.room.state.seq")
        running.servers[owner].kill_group()
        for client in (instructor, student):
            client.page.wait_for_function("document.getElementById('connection').dataset.status === 'live' "
                                          "&& theatrum.room.socket.connected", timeout=20_000)
        assert running.owner_of(room_id) not in (None, owner)
        student.js("theatrum.room.op('annotation.create', {type: 'point', position: [2, 20, 760], "
                   "label: 'after the failover'})")
        instructor.page.locator("#annotations li", has_text="after the failover").wait_for(timeout=10_000)
        assert instructor.js("theatrum.room.state.seq") == student.js("theatrum.room.state.seq") > seq
        leaves = [e for e in running.api.get(f"/api/rooms/{room_id}/events?from={seq}").json()["events"]
                  if e["kind"] == "participant.leave"]
        assert leaves == []  # both stayed present through the failover
    finally:
        for client in (instructor, student):
            client.close()
        if owner is not None and running.servers[owner].process.poll() is not None:
            running.start_server(owner)
    for client in (instructor, student):
        assert not [e for e in client.errors if "WebSocket" not in e and "socket.io" not in e], client.errors


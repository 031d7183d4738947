"""Several processes for real: three `theatrum serve` + one `theatrum worker` + PostgreSQL + Redis + nginx with the
configuration of docs/operations.md (tests/cluster.py).

- a lobby socket on one process sees the progress of a job that the worker runs;
- rooms spread over the processes; ten clients per room, all through nginx, converge on one state whose head is
  the RFC 6962 root of the room's log, and each room is served by exactly one process;
- kill -9 of the process that serves a room while five clients send ops: every client is back through nginx
  within 10 s, no acknowledged op is lost, the log has no gap and no duplicate, the participants stayed present,
  and the export (checkpoints from before and after) passes `theatrum verify`;
- a stale owner (SIGSTOP, another process takes its room, SIGCONT) cannot append: its op fails with
  `unavailable`, nothing forks, and the export still verifies.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import socketio
from cluster import Cluster, ResumingClient, cluster_on
from conftest import DICOM, require_path
from hubtools import RoomClient, until
from rooms import point, rfc6962_root
from serverproc import THEATRUM, Api, command_line, zip_tree

from sessions.events import Event

REGULAR = DICOM / "ct-head-phantom-philips" / "DICOM" / "S21570" / "S2010"
CLIENTS_PER_ROOM = 10
OPS_PER_CLIENT = 5
BACK_WITHIN_S = 10.0
OP_INTERVAL_S = 0.3  # five clients stay under a room's 20 events a second (THEATRUM_ROOM_MAX_EVENTS_PER_MINUTE)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def running(tmp_path_factory, postgres_server) -> Iterator[Cluster]:
    with cluster_on(postgres_server, tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture(scope="module")
def study(running: Cluster) -> dict:
    """The Philips phantom's regular series, uploaded through nginx and meshed by the worker."""
    api = running.api
    uploaded = api.upload_zip(zip_tree(require_path(REGULAR, "the Philips phantom")))
    series = uploaded["series"][0]["id"]
    job = _request_mesh(api, uploaded["study_id"], series, 20_000)
    done = api.wait_job(job["id"], lambda j: j["state"] in ("done", "failed", "cancelled"), timeout=180)
    assert done["state"] == "done", done
    return {"study": uploaded["study_id"], "series": series, "mesh": done["mesh_ids"][0]}


def _request_mesh(api: Api, study: str, series: str, triangles: int) -> dict:
    response = api.post(f"/api/studies/{study}/meshes", {"series": series, "presets": ["bone"],
                                                         "target_triangles": triangles})
    assert response.status == 202, response.body
    return response.json()["job"]


def _room(running: Cluster, study: dict, title: str) -> str:
    response = running.api.post("/api/rooms", {"mode": "consult", "title": title, "study_id": study["study"],
                                               "mesh_ids": [study["mesh"]]})
    assert response.status == 201, response.body
    return response.json()["room"]["id"]


def _invite(running: Cluster, room: str, role: str, name: str) -> str:
    response = running.api.post(f"/api/rooms/{room}/invites", {"role": role, "name": name})
    assert response.status == 201, response.body
    return response.json()["token"]


def _read_events(running: Cluster, room: str, after: int, *, patience_s: float = 15.0) -> dict:
    """One page of the room's events. A 503 `unavailable` (documented: a process that has just lost the room's
    fence lets it go, and the next request reads it from PostgreSQL) is asked again, as a client would."""
    end = time.monotonic() + patience_s
    while True:
        r = running.api.get(f"/api/rooms/{room}/events?from={after}")
        if r.status != 503 or time.monotonic() > end:
            assert r.status == 200, (r.status, r.body[:500])
            return r.json()
        time.sleep(0.2)


def _log(running: Cluster, room: str) -> tuple[list[Event], str]:
    """Every event of the room's log and its head, read through nginx."""
    events, after, head = [], 0, ""
    while True:
        body = _read_events(running, room, after)
        events += [Event.from_wire(room, e) for e in body["events"]]
        head = body["head"]
        if body["next"] is None:
            return events, head
        after = body["next"]


def _verify_export(running: Cluster, room: str, folder: Path) -> str:
    response = running.api.get(f"/api/rooms/{room}/export")
    assert response.status == 200, response.body[:500]
    bundle = folder / f"{room}.zip"
    bundle.write_bytes(response.body)
    verified = subprocess.run([str(THEATRUM), "verify", str(bundle)], capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return verified.stdout


def _checkpoint_sizes(running: Cluster, room: str) -> list[int]:
    return [c["size"] for c in running.api.get(f"/api/rooms/{room}/checkpoints").json()["checkpoints"]]


def test_a_lobby_on_one_process_sees_the_progress_of_a_job_the_worker_runs(running, study):
    async def main() -> list[dict]:
        heard: list[dict] = []
        lobby = socketio.AsyncClient(reconnection=False)
        lobby.on("job", heard.append)
        await lobby.connect(running.direct(2), auth={"token": running.api.token}, transports=["websocket"])
        try:
            job = await asyncio.to_thread(_request_mesh, Api("127.0.0.1", running.ports[0], running.api.token),
                                          study["study"], study["series"], 40_000)
            await until(lambda: any(e["id"] == job["id"] and e["state"] == "done" for e in heard),
                        "the job's end, heard on another process's lobby", timeout=180)
            return [e for e in heard if e["id"] == job["id"]]
        finally:
            await lobby.disconnect()

    events = asyncio.run(main())
    states = [e["state"] for e in events]
    running_percents = [e["percent"] for e in events if e["state"] == "running"]
    assert states[-1] == "done" and "running" in states, states
    assert len(set(running_percents)) >= 3 and running_percents == sorted(running_percents), running_percents
    job = events[-1]["id"]
    assert f"job {job} done" in running.worker_output()  # the worker ran it, not a server
    assert all(f"job {job} done" not in server.output() for server in running.servers)


def test_rooms_spread_over_the_processes_and_ten_clients_each_converge_through_nginx(running, study):
    # Rooms hash onto processes: make rooms until three are served by three different processes.
    chosen: dict[int, str] = {}
    for n in range(20):
        room = _room(running, study, f"Spread {n}")
        probe = _invite(running, room, "surgeon", "Probe")
        asyncio.run(_touch(running, room, probe))
        owner = running.owner_of(room)
        assert owner is not None, "no process took the room"
        chosen.setdefault(owner, room)
        if len(chosen) == 3:
            break
    assert len(chosen) == 3, f"20 rooms landed on {len(chosen)} process(es) only"

    async def main() -> None:
        clients: dict[str, list[RoomClient]] = {}
        try:
            for room in chosen.values():
                tokens = [_invite(running, room, "surgeon", f"Surgeon {i}") for i in range(CLIENTS_PER_ROOM)]
                clients[room] = [await ResumingClient(running.url, token, room).connect() for token in tokens]
            sends = [client.op(**point(float(i), label=f"{room}-{c}-{i}"))
                     for room, members in clients.items() for c, client in enumerate(members)
                     for i in range(OPS_PER_CLIENT)]
            acks = await asyncio.gather(*sends)
            assert all(ack["ok"] for ack in acks), [a for a in acks if not a["ok"]][:3]
            for members in clients.values():
                final = max(c.seq for c in members)
                for client in members:
                    await client.wait_seq(final)
            for owner, room in chosen.items():
                _check_converged(running, room, owner, clients[room])
        finally:
            await _close_all([c for members in clients.values() for c in members])

    asyncio.run(main())


def _check_converged(running: Cluster, room: str, owner: int, members: list[RoomClient]) -> None:
    events, head = _log(running, room)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert head == rfc6962_root([e.leaf() for e in events]).hex()
    labels = [e.data.get("label") for e in events if e.kind == "annotation.create"]
    assert len(labels) == CLIENTS_PER_ROOM * OPS_PER_CLIENT == len(set(labels))
    assert {len(c.state.annotations) for c in members} == {len(labels)}
    assert all(c.state.snapshot() == members[0].state.snapshot() for c in members)
    assert all(c.seq == len(events) and c.duplicates == 0 and c.gaps == 0 for c in members)
    assert running.owner_of(room) == owner
    took = [i for i, server in enumerate(running.servers) if f"room {room}: served here" in server.output()]
    assert took in ([owner], []), f"room {room} was taken by processes {took}"  # []: it stayed where it was made


async def _touch(running: Cluster, room: str, token: str) -> None:
    client = await ResumingClient(running.url, token, room).connect()
    await client.close()


async def _close_all(clients) -> None:
    for client in clients:
        await client.close()


def test_kill_9_of_a_rooms_process_loses_no_acknowledged_op(running, study, tmp_path):
    room = _room(running, study, "Failover")
    tokens = [_invite(running, room, "surgeon", f"Surgeon {i}") for i in range(5)]
    acked: dict[str, int] = {}  # label -> seq
    state: dict = {}

    async def send(client: ResumingClient, name: str, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            label = f"{name}-{n}"
            n += 1
            try:
                ack = await client.sio.call("op", point(float(n), label=label), timeout=3)
            except Exception:  # the process died under the op: it may or may not be in the log
                await client.connected.wait()
                continue
            if ack.get("ok"):
                acked[label] = ack["seq"]
            else:
                state.setdefault("refused", []).append(ack["error"])
                await client.connected.wait()
            await asyncio.sleep(OP_INTERVAL_S)

    async def main() -> None:
        clients = [await ResumingClient(running.url, token, room).connect() for token in tokens]
        try:
            stop = asyncio.Event()
            senders = [asyncio.create_task(send(c, f"s{i}", stop)) for i, c in enumerate(clients)]
            await asyncio.sleep(3.0)
            owner = running.owner_of(room)
            state["owner"], state["seq_at_kill"] = owner, max(acked.values())
            killed = time.monotonic()
            running.servers[owner].kill_group()
            await until(lambda: all(c.reconnects >= 1 and c.connected.is_set() for c in clients),
                        "every client back through nginx", timeout=30)
            state["back_after"] = time.monotonic() - killed
            await asyncio.sleep(3.0)
            stop.set()
            await asyncio.gather(*senders)
            final = max(c.seq for c in clients)
            for client in clients:
                await client.wait_seq(final)
            _check_failover(running, room, state, acked, clients, tmp_path)
        finally:
            await _close_all(clients)

    try:
        asyncio.run(main())
    finally:
        if "owner" in state:
            running.start_server(state["owner"])


def _check_failover(running: Cluster, room: str, state: dict, acked: dict[str, int], clients: list,
                    folder: Path) -> None:
    assert state["back_after"] <= BACK_WITHIN_S, state
    events, head = _log(running, room)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # no gap
    labels = [e.data["label"] for e in events if e.kind == "annotation.create"]
    assert len(labels) == len(set(labels))  # no duplicate
    by_seq = {e.seq: e for e in events}
    lost = [label for label, seq in acked.items()
            if by_seq.get(seq) is None or by_seq[seq].data.get("label") != label]
    assert lost == [] and len(acked) > 40 and not state.get("refused"), (lost, len(acked), state)
    assert any(seq > state["seq_at_kill"] for seq in acked.values()), state  # ops went on after the failover
    assert head == rfc6962_root([e.leaf() for e in events]).hex()
    assert all(c.seq == len(events) and c.state.snapshot() == clients[0].state.snapshot() for c in clients)
    after = [e for e in events if e.seq > state["seq_at_kill"]]
    assert not [e for e in after if e.kind in ("participant.leave", "participant.join")]  # stayed present
    new_owner = running.owner_of(room)
    assert new_owner is not None and new_owner != state["owner"]
    sizes = _checkpoint_sizes(running, room)
    assert any(s <= state["seq_at_kill"] for s in sizes) and any(s > state["seq_at_kill"] for s in sizes), (
        sizes, state)
    assert "OK" in _verify_export(running, room, folder)


def test_a_stale_owner_cannot_append(running, study, tmp_path):
    room = _room(running, study, "Stale owner")
    first, second = (_invite(running, room, "surgeon", name) for name in ("Stale", "Fresh"))

    async def main() -> dict:
        stale = await ResumingClient(running.url, first, room).connect()
        stale._closing = True  # no reconnect: this test watches what the old process does
        owner = running.owner_of(room)
        other = (owner + 1) % len(running.servers)
        before = (await stale.op(**point(1.0, label="before")))["seq"]
        pid = running.servers[owner].process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            fresh = RoomClient(f"{running.direct(other)}?room={room}", second)
            await fresh.connect()
            acks = [await fresh.op(**point(2.0, label=f"fresh-{i}")) for i in range(3)]
            late = asyncio.create_task(stale.sio.call("op", point(3.0, label="stale"), timeout=20))
            await asyncio.sleep(0.5)
        finally:
            os.kill(pid, signal.SIGCONT)
        refused = await late
        await until(lambda: not stale.sio.connected, "the stale process closing its socket", timeout=10)
        await fresh.close()
        return {"before": before, "acks": acks, "refused": refused, "owner": owner, "other": other}

    outcome = asyncio.run(main())
    assert all(ack["ok"] for ack in outcome["acks"])
    assert outcome["refused"]["ok"] is False and outcome["refused"]["error"]["code"] == "unavailable"
    events, head = _log(running, room)
    labels = [e.data.get("label") for e in events if e.kind == "annotation.create"]
    assert labels == ["before", "fresh-0", "fresh-1", "fresh-2"]  # nothing of the stale process, no fork
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert head == rfc6962_root([e.leaf() for e in events]).hex()
    assert "another process" in running.servers[outcome["owner"]].output()
    assert "OK" in _verify_export(running, room, tmp_path)


def test_the_job_queue_is_bounded_across_processes_and_a_cancelled_queued_job_never_runs(running, study):
    apis = [Api("127.0.0.1", port, running.api.token) for port in running.ports]
    os.kill(running.worker.pid, signal.SIGSTOP)  # nothing leaves the queue meanwhile
    try:
        queued = [_request_mesh(apis[n], study["study"], study["series"], 10_000 + 1000 * n) for n in range(3)]
        full = apis[2].post(f"/api/studies/{study['study']}/meshes", {"series": study["series"], "presets": ["bone"],
                                                                       "target_triangles": 15_000})
        assert full.status == 429 and full.json()["error"], full.body  # the bound counts every process's jobs
        assert apis[1].request("DELETE", f"/api/jobs/{queued[0]['id']}").status == 200
    finally:
        os.kill(running.worker.pid, signal.SIGCONT)
    for job in queued[1:]:
        assert running.api.wait_job(job["id"], lambda j: j["state"] in ("done", "failed", "cancelled"),
                                    timeout=180)["state"] == "done"
    cancelled = running.api.job(queued[0]["id"])
    assert cancelled["state"] == "cancelled" and cancelled["mesh_ids"] == []
    assert f"job {queued[0]['id']} done" not in running.worker_output()


@pytest.fixture(scope="module")
def big_study(running: Cluster, tmp_path_factory) -> dict:
    """A 300 x 512 x 512 synthetic head (sample_data/phantom.py): long enough a job to stop in the middle."""
    import importlib.util
    import sys

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("cluster_phantom", REPO / "sample_data" / "phantom.py")
    phantom = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = phantom
    spec.loader.exec_module(phantom)
    folder = tmp_path_factory.mktemp("phantom")
    phantom.write_phantom(folder, phantom.PhantomParameters(shape=(300, 512, 512)))
    uploaded = running.api.upload_zip(zip_tree(folder, deflate=False))
    return {"study": uploaded["study_id"], "series": uploaded["series"][0]["id"]}


def _big_job(running: Cluster, big_study: dict, triangles: int) -> dict:
    response = running.api.post(f"/api/studies/{big_study['study']}/meshes", {
        "series": big_study["series"], "presets": ["bone", "skin"], "target_triangles": triangles})
    assert response.status == 202, response.body
    job = response.json()["job"]
    return running.api.wait_job(job["id"], lambda j: j["state"] != "queued" and j["percent"] >= 10, timeout=120,
                                interval=0.05)


def test_a_job_whose_worker_died_runs_again_and_a_running_job_is_cancelled_from_any_process(running, big_study):
    job = _big_job(running, big_study, 210_000)
    assert job["state"] == "running", job
    running.kill_worker()
    running.start_worker()
    done = running.api.wait_job(job["id"], lambda j: j["state"] in ("done", "failed", "cancelled"), timeout=240)
    assert done["state"] == "done" and len(done["mesh_ids"]) == 2, done
    assert f"job {job['id']} was running on a worker that stopped: run again" in running.worker_output()

    job = _big_job(running, big_study, 220_000)
    assert _job_processes(running) != []
    other = Api("127.0.0.1", running.ports[1], running.api.token)
    assert other.request("DELETE", f"/api/jobs/{job['id']}").status == 200
    time.sleep(3)  # what the job would have gone on to do, had it not been stopped
    stopped = running.api.job(job["id"])
    assert stopped["state"] == "cancelled" and stopped["mesh_ids"] == [], stopped
    assert f"job {job['id']} done" not in running.worker_output()
    assert _job_processes(running) == []  # the job's process was stopped


def _job_processes(running: Cluster) -> list[str]:
    """The command lines of the worker's job processes (multiprocessing's spawned children)."""
    return [command_line(int(proc.name)) for proc in Path("/proc").glob("[0-9]*")
            if _pgid(proc) == running.worker.pid and "spawn_main" in command_line(int(proc.name))]


def _pgid(proc: Path) -> int | None:
    try:
        text = (proc / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[2]) if fields[0] != "Z" else None


def test_the_readme_carries_the_nginx_configuration_of_the_operations_doc():
    from cluster import OPERATIONS, nginx_block
    from conftest import REPO

    readme = (REPO / "README.md").read_text()
    assert nginx_block(readme) == nginx_block(OPERATIONS.read_text())
    assert json.dumps  # the README block is the one tested above, character for character

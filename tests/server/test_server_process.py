"""`theatrum serve` as a real process: upload, reconstruct, deliver, shut down; a kill -9 mid-job; a busy loop.

Everything goes through the installed console script and real HTTP on a loopback port, with nothing mocked:
- the Philips phantom (two studies) is uploaded as one zip, meshed, downloaded plain and Draco-compressed, checked
  by the Khronos glTF-Validator, revalidated through its ETag (304), and the server stops cleanly on SIGTERM;
- a 512x512x300 synthetic head is meshed and the server, with its worker, is killed with SIGKILL mid-job: after
  a restart the catalog is intact, no partial file is left, and the job is re-queued and finishes;
- while such a job runs, ``/api/health`` keeps answering within 100 ms (the event loop never does the heavy work).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DICOM, REPO, free_port, require_path
from serverproc import (
    FINAL_STATES,
    THEATRUM,
    Api,
    ServerProcess,
    command_line,
    validate_glb,
    zip_tree,
)

PHILIPS = DICOM / "ct-head-phantom-philips"
BIG_SHAPE = (300, 512, 512)  # (slices, rows, columns): the issue's "512x512x300 reconstruction"
MESH_REQUEST = {"presets": ["bone"], "target_triangles": 50_000}
MAX_HEALTH_LATENCY_S = 0.100  # the issue's requirement for /api/health while a reconstruction runs
PROBE_INTERVAL_S = 0.050
# A job is "mid-way" once its volume is assembled and surface extraction has begun.
EARLY_STAGES = ("", "starting", "reading", "decoding", "re-queued after restart")

pytestmark = pytest.mark.slow


# -- fixtures ---------------------------------------------------------------------------------------------------
@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """``serve(data=None) -> ServerProcess``: start servers that are always gone (SIGKILLed) after the test."""
    started: list[ServerProcess] = []

    def start(data: Path | None = None) -> ServerProcess:
        server = ServerProcess.start(data or tmp_path / "data", env={"THEATRUM_WORKERS": "1"})
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None or server.group():
            server.kill_group()


@pytest.fixture(scope="session")
def big_series(tmp_path_factory) -> Path:
    """A folder holding a 512x512x300 synthetic CT head, written once per session (~20 s)."""
    phantom = sys.modules.get("sample_data_phantom")
    if phantom is None:
        spec = importlib.util.spec_from_file_location("sample_data_phantom", REPO / "sample_data" / "phantom.py")
        phantom = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = phantom
        spec.loader.exec_module(phantom)
    folder = tmp_path_factory.mktemp("phantom-300x512x512")
    phantom.write_phantom(folder, phantom.PhantomParameters(shape=BIG_SHAPE))
    return folder


@pytest.fixture(scope="module")
def big_series_zip(big_series: Path) -> bytes:
    """The big series as one stored (uncompressed) zip, held only while this module's tests run."""
    return zip_tree(big_series, deflate=False)


# -- helpers ----------------------------------------------------------------------------------------------------
def partial_files(data: Path) -> list[Path]:
    """Temporary files an interrupted write leaves: artifact temp files and unfinished uploads."""
    return sorted(data.rglob(".tmp-*")) + sorted(p for p in (data / "tmp").rglob("*") if p.is_file())


def integrity(catalog: Path) -> str:
    db = sqlite3.connect(catalog)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def job_row(catalog: Path, job_id: str) -> dict:
    db = sqlite3.connect(catalog)
    db.row_factory = sqlite3.Row
    try:
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return dict(row) if row else {}
    finally:
        db.close()


def request_job(api: Api, study_id: str, body: dict) -> str:
    r = api.post(f"/api/studies/{study_id}/meshes", body)
    assert r.status == 202, (r.status, r.body[:2000])
    job_id = r.json()["job"]["id"]
    assert r.headers["location"] == f"/api/jobs/{job_id}"
    return job_id


def finished(job: dict) -> bool:
    return job["state"] in FINAL_STATES


def fetch_glb(api: Api, mesh_id: str, query: str = "") -> tuple[bytes, str]:
    r = api.get(f"/api/meshes/{mesh_id}.glb{query}")
    assert r.status == 200, (query, r.status, r.body[:500])
    assert r.body[:4] == b"glTF" and r.headers["content-type"] == "model/gltf-binary"
    assert "immutable" in r.headers["cache-control"]
    return r.body, r.headers["etag"]


def wait_until(condition, timeout: float, interval: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def assert_valid(report: dict) -> None:
    issues = report["issues"]
    assert issues["numErrors"] == 0, [m for m in issues["messages"] if m["severity"] == 0]


# -- 1. the whole path, through a real server process ----------------------------------------------------------
def test_serve_upload_reconstruct_deliver_and_stop(serve, tmp_path):
    require_path(PHILIPS, "the Philips head phantom")
    server = serve()
    api = server.api

    token_file = server.data / "admin-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert f"    http://127.0.0.1:{server.port}/?token={server.token}\n" in server.output()
    assert Api("127.0.0.1", server.port).get("/api/studies").status == 401

    uploaded = api.upload_zip(zip_tree(PHILIPS))
    slices = {s["study_id"]: [x["slices"] for x in s["series"]] for s in uploaded["studies"]}
    assert sorted(slices.values()) == [[28], [54]], uploaded["studies"]
    assert uploaded["instances"] == {"added": 28 + 54, "duplicates": 0}
    listed = {s["id"] for s in api.get("/api/studies").json()["studies"]}
    assert listed == set(slices)
    study_id = next(sid for sid, n in slices.items() if n == [28])

    job = api.wait_job(request_job(api, study_id, MESH_REQUEST), finished, server=server)
    assert job["state"] == "done", job
    assert job["percent"] == 100 and job["error"] is None
    [mesh_id] = job["mesh_ids"]
    r = api.post(f"/api/studies/{study_id}/meshes", MESH_REQUEST)
    assert r.status == 200, "the same request is answered from the cache"
    [mesh] = r.json()["meshes"]
    assert mesh["id"] == mesh_id and 0 < mesh["triangles"] <= MESH_REQUEST["target_triangles"]

    plain, plain_etag = fetch_glb(api, mesh_id, "?format=plain")
    draco, draco_etag = fetch_glb(api, mesh_id)
    assert plain_etag != draco_etag and len(draco) < len(plain)
    plain_report = validate_glb(plain, tmp_path / "plain.glb")
    assert_valid(plain_report)
    assert plain_report["info"]["totalTriangleCount"] == mesh["triangles"]
    draco_report = validate_glb(draco, tmp_path / "draco.glb")
    assert_valid(draco_report)
    assert "KHR_draco_mesh_compression" in draco_report["info"]["extensionsUsed"]

    for query, etag in (("", draco_etag), ("?format=plain", plain_etag)):
        r = api.get(f"/api/meshes/{mesh_id}.glb{query}", headers={"If-None-Match": etag})
        assert r.status == 304 and r.body == b"", query
        assert r.headers["etag"] == etag

    # SIGTERM while the other study's job runs: a clean exit, its worker stopped, the job kept for the next start.
    tilted = next(sid for sid, n in slices.items() if n == [54])
    running = api.wait_job(request_job(api, tilted, MESH_REQUEST), lambda j: j["state"] != "queued", server=server,
                           interval=0.05)
    assert running["state"] == "running", running
    assert server.stop(signal.SIGTERM, timeout=10) == 0, server.output()[-4000:]
    assert wait_until(lambda: not server.group(), 5), "no worker may outlive the server"
    catalog = server.data / "catalog.sqlite"
    assert integrity(catalog) == "ok"
    assert job_row(catalog, running["id"])["state"] in ("queued", "running"), "kept, to be re-queued at start"


# -- 2. kill -9 in the middle of a job, then restart ----------------------------------------------------------
def test_kill_9_mid_job_then_restart(serve, big_series_zip):
    server = serve()
    data = server.data
    catalog = data / "catalog.sqlite"
    study_id = server.api.upload_zip(big_series_zip)["study_id"]
    job_id = request_job(server.api, study_id, MESH_REQUEST)

    seen = server.api.wait_job(job_id, lambda j: finished(j) or j["stage"] not in EARLY_STAGES,
                               server=server, interval=0.05)
    assert seen["state"] == "running", f"the job must be killed mid-way, but it is {seen}"
    assert any("spawn_main" in command_line(pid) for pid in server.group()), \
        "the job runs in a spawned worker process of the server's process group"
    server.kill_group()
    assert wait_until(lambda: not server.group(), 5), "kill -9 of the group leaves nothing"

    # What the crash left: the job still 'running', and (as a SIGKILL during an artifact write or an upload
    # would leave them) a half-written artifact temp file and an unfinished upload.
    assert integrity(catalog) == "ok"
    assert job_row(catalog, job_id)["state"] == "running"
    shard = data / "objects" / "ff"
    shard.mkdir(parents=True, exist_ok=True)
    fd, _ = tempfile.mkstemp(prefix=".tmp-", dir=shard)
    os.write(fd, b"glTF\x02\x00\x00\x00")  # a GLB header, and nothing after it
    os.close(fd)
    (data / "tmp" / "upload-crashed").mkdir(parents=True, exist_ok=True)
    (data / "tmp" / "upload-crashed" / "part-000001").write_bytes(b"PK\x03\x04")
    assert len(partial_files(data)) == 2

    restart = time.time()
    restarted = serve(data)
    api = restarted.api
    assert partial_files(data) == [], "partial files must be removed at start"
    requeued = api.job(job_id)
    assert requeued["state"] == "queued" or (requeued["state"] == "running" and requeued["started_at"] >= restart), \
        f"the interrupted job must be re-queued, not left as it was: {requeued}"
    job = api.wait_job(job_id, finished, server=restarted, timeout=180)
    assert job["state"] == "done", f"the re-queued job must finish: {job}"
    assert job["mesh_ids"] == list(job["params"]["mesh_ids"].values())
    studies = api.get("/api/studies").json()["studies"]
    assert [(s["id"], [x["slices"] for x in s["series"]]) for s in studies] == [(study_id, [BIG_SHAPE[0]])]
    [mesh_id] = job["mesh_ids"]
    draco, _ = fetch_glb(api, mesh_id)
    assert_valid(validate_glb(draco, data.parent / "after-restart.glb"))
    assert not list(data.rglob(".tmp-*"))

    assert restarted.stop(signal.SIGTERM, timeout=10) == 0, restarted.output()[-4000:]
    assert integrity(catalog) == "ok"


# -- 3. the event loop stays responsive during a 512x512x300 reconstruction -----------------------------------
def test_health_stays_fast_while_a_big_job_runs(serve, big_series_zip, record_property):
    server = serve()
    api = server.api
    study_id = api.upload_zip(big_series_zip)["study_id"]

    samples: list[tuple[float, float]] = []  # (wall clock when sent, round trip in s)
    stop = threading.Event()

    def probe() -> None:
        bare = Api("127.0.0.1", server.port, timeout=10)
        while not stop.is_set():
            sent, t0 = time.time(), time.perf_counter()
            try:
                ok = bare.get("/api/health", auth=False).status == 200
            except OSError:
                ok = False
            samples.append((sent, time.perf_counter() - t0 if ok else float("inf")))
            stop.wait(PROBE_INTERVAL_S)

    prober = threading.Thread(target=probe, name="health-probe", daemon=True)
    prober.start()
    try:
        job = api.wait_job(request_job(api, study_id, MESH_REQUEST), finished, server=server, interval=0.25)
    finally:
        stop.set()
        prober.join(15)
    assert job["state"] == "done", job
    during = [rtt for sent, rtt in samples if job["started_at"] <= sent <= job["finished_at"]]
    seconds = job["finished_at"] - job["started_at"]
    assert len(during) >= seconds / (PROBE_INTERVAL_S + MAX_HEALTH_LATENCY_S) / 2, (len(during), seconds)
    during.sort()
    summary = (f"/api/health during a {seconds:.1f} s 512x512x300 job: {len(during)} requests, "
               f"median {during[len(during) // 2] * 1e3:.1f} ms, max {during[-1] * 1e3:.1f} ms")
    record_property("health_latency", summary)
    print(summary)
    assert during[-1] < MAX_HEALTH_LATENCY_S, summary


# -- 4. one server per data folder -----------------------------------------------------------------------------
def test_a_second_server_on_the_same_data_folder_exits_2_and_the_first_carries_on(serve):
    first = serve()
    run = subprocess.run(
        [str(THEATRUM), "serve", "--host", "127.0.0.1", "--port", str(free_port()), "--data", str(first.data)],
        capture_output=True, text=True, timeout=60, env={k: v for k, v in os.environ.items()
                                                         if not k.startswith("THEATRUM_")})
    assert run.returncode == 2, run.stderr
    assert f"theatrum serve: error: {first.data}: a database there is in use by another Theatrum server" \
        in run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    assert first.api.get("/api/health", auth=False).status == 200
    assert first.api.get("/api/rooms").status == 200

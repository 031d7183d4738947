"""The study API through a real aiohttp test client: access, errors, upload, cache, jobs, mesh delivery."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from pathlib import Path

import pytest
from conftest import DICOM, require_path, write_uneven_philips

from server.api.system import openapi_document
from server.app import build_app, routes
from server.appkeys import ADMIN_TOKEN, CATALOG, JOBS, LIBRARY, SETTINGS
from server.config import Settings
from server.services.imports import import_folder

PHILIPS = DICOM / "ct-head-phantom-philips"
REGULAR = PHILIPS / "DICOM" / "S21570" / "S2010"


def auth(app) -> dict:
    return {"Authorization": f"Bearer {app[ADMIN_TOKEN]}"}


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    app = build_app(Settings(data=tmp_path / "data", workers=1))
    c = await aiohttp_client(app)
    c.h = auth(app)
    return c


def zip_of(folder: Path, *, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


# -- access ---------------------------------------------------------------------------------------------------
async def test_health_is_public(client):
    r = await client.get("/api/health")
    assert r.status == 200
    assert (await r.json())["status"] == "ok"


@pytest.mark.parametrize("path", ["/api/studies", "/api/openapi.json", "/api/jobs/x", "/api/meshes/x.glb"])
async def test_api_requires_a_token(client, path):
    r = await client.get(path)
    assert r.status == 401
    body = await r.json()
    assert body["error"] == "unauthorized" and body["detail"]
    r = await client.get(path, headers={"Authorization": "Bearer wrong"})
    assert r.status == 403
    assert set(await r.json()) == {"error", "detail"}


async def test_admin_token_file_is_private(client, tmp_path):
    token_file = tmp_path / "data" / "admin-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert token_file.read_text().strip() == client.server.app[ADMIN_TOKEN]


async def test_cors_is_off_by_default(client):
    r = await client.get("/api/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


async def test_cors_allows_configured_origin(aiohttp_client, tmp_path):
    app = build_app(Settings(data=tmp_path / "d", cors_origins=("https://lobby.example",)))
    c = await aiohttp_client(app)
    r = await c.get("/api/health", headers={"Origin": "https://lobby.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://lobby.example"
    r = await c.get("/api/health", headers={"Origin": "https://other.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


# -- errors ---------------------------------------------------------------------------------------------------
async def test_unknown_ids_are_404_json(client):
    for path in ("/api/studies/nope", "/api/jobs/nope", "/api/meshes/nope", "/api/meshes/nope.glb",
                 "/api/no-such-endpoint"):
        r = await client.get(path, headers=client.h)
        assert r.status == 404, path
        assert set(await r.json()) == {"error", "detail"}


async def test_malformed_json_and_wrong_types(client):
    study_id = await upload_regular(client)
    study = await (await client.get(f"/api/studies/{study_id}", headers=client.h)).json()
    assert study["series"][0]["warnings"] == []  # a regular series warns of nothing
    url = f"/api/studies/{study_id}/meshes"
    r = await client.post(url, data=b"{not json", headers={**client.h, "Content-Type": "application/json"})
    assert r.status == 400 and (await r.json())["error"] == "malformed_json"
    for body in ({"presets": "bone"}, {"presets": []}, {"presets": ["bone"], "threshold": "high"},
                 {"presets": ["bone"], "target_triangles": 12.5}, {"presets": ["nope"]}, {"whatever": 1},
                 {"presets": ["bone"], "allow_gaps": "yes"}, [1, 2]):
        r = await client.post(url, json=body, headers=client.h)
        assert r.status == 400, body
        assert set(await r.json()) == {"error", "detail"}


# -- upload ---------------------------------------------------------------------------------------------------
async def upload_regular(client) -> str:
    require_path(REGULAR, "the Philips head phantom")
    r = await client.post("/api/studies", data=zip_of(REGULAR), headers={**client.h, "Content-Type": "application/zip"})
    assert r.status in (200, 201), await r.text()
    return (await r.json())["study_id"]


async def test_upload_zip_is_idempotent_and_deidentified(client):
    require_path(REGULAR, "the Philips head phantom")
    data = zip_of(REGULAR)
    r = await client.post("/api/studies", data=data, headers={**client.h, "Content-Type": "application/zip"})
    assert r.status == 201, await r.text()
    first = await r.json()
    assert first["instances"]["added"] == 28
    [series] = first["series"]
    assert series["slices"] == 28 and series["rows"] == 512 and series["modality"] == "CT"
    r = await client.post("/api/studies", data=data, headers={**client.h, "Content-Type": "application/zip"})
    assert r.status == 200
    again = await r.json()
    assert again["instances"] == {"added": 0, "duplicates": 28}
    assert again["study_id"] == first["study_id"]
    listing = await (await client.get("/api/studies", headers=client.h)).text()
    detail = await (await client.get(f"/api/studies/{first['study_id']}", headers=client.h)).text()
    import pydicom

    ds = pydicom.dcmread(next(p for p in REGULAR.iterdir() if p.name.startswith("I")), stop_before_pixels=True)
    # The phantom's PatientName "HEAD" is also a word of its (non-identifying) study description, so names are
    # looked for as JSON string values; IDs and UIDs must not appear anywhere.
    for value in (ds.PatientName, ds.get("PatientBirthDate"), ds.get("InstitutionName")):
        if value and str(value).strip():
            assert json.dumps(str(value)) not in listing and json.dumps(str(value)) not in detail
    for value in (ds.get("PatientID"), ds.get("AccessionNumber"), ds.StudyInstanceUID, ds.SeriesInstanceUID,
                  ds.SOPInstanceUID):
        if value and str(value).strip():
            assert str(value) not in listing and str(value) not in detail


async def test_upload_multipart_files(client):
    require_path(REGULAR, "the Philips head phantom")
    import aiohttp

    form = aiohttp.FormData()
    for p in sorted(REGULAR.iterdir())[:6]:
        form.add_field("file", p.read_bytes(), filename=p.name, content_type="application/dicom")
    r = await client.post("/api/studies", data=form, headers=client.h)
    assert r.status == 201, await r.text()
    assert (await r.json())["instances"]["added"] >= 5


@pytest.mark.parametrize("case", ["not_dicom", "truncated", "zip_slip", "absolute", "empty"])
async def test_bad_uploads_store_nothing(client, case, tmp_path):
    require_path(REGULAR, "the Philips head phantom")
    one = next(p for p in sorted(REGULAR.iterdir()) if p.name.startswith("I"))
    if case == "not_dicom":
        body, ctype = b"hello, this is not DICOM" * 100, "application/octet-stream"
    elif case == "truncated":
        body, ctype = one.read_bytes()[: one.stat().st_size // 2], "application/dicom"
    elif case == "zip_slip":
        body, ctype = zip_of(REGULAR, extra={"../../evil.dcm": one.read_bytes()}), "application/zip"
    elif case == "absolute":
        body, ctype = zip_of(REGULAR, extra={"/etc/evil.dcm": one.read_bytes()}), "application/zip"
    else:
        body, ctype = b"", "application/octet-stream"
    r = await client.post("/api/studies", data=body, headers={**client.h, "Content-Type": ctype})
    assert 400 <= r.status < 500, (case, r.status, await r.text())
    assert set(await r.json()) == {"error", "detail"}
    assert (await (await client.get("/api/studies", headers=client.h)).json())["studies"] == []
    objects = tmp_path / "data" / "objects"
    assert not any(p.is_file() for p in objects.rglob("*")), "nothing may be stored"
    assert not (tmp_path / "evil.dcm").exists()


async def test_zip_bomb_is_refused(aiohttp_client, tmp_path):
    app = build_app(Settings(data=tmp_path / "d", max_unzipped_bytes=50_000_000, max_zip_ratio=100))
    c = await aiohttp_client(app)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("bomb.dcm", b"\0" * 200_000_000)
    r = await c.post("/api/studies", data=buf.getvalue(), headers={**auth(app), "Content-Type": "application/zip"})
    assert r.status == 400, await r.text()
    assert set(await r.json()) == {"error", "detail"}


async def test_oversized_upload_is_413(aiohttp_client, tmp_path):
    app = build_app(Settings(data=tmp_path / "d", max_upload_bytes=10_000))
    c = await aiohttp_client(app)
    r = await c.post("/api/studies", data=b"x" * 50_000,
                     headers={**auth(app), "Content-Type": "application/octet-stream"})
    assert r.status == 413
    assert (await r.json())["error"] == "upload_too_large"


# -- meshes, cache, jobs, delivery ---------------------------------------------------------------------------
async def wait_job(client, job_id: str, timeout: float = 240) -> dict:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        job = await (await client.get(f"/api/jobs/{job_id}", headers=client.h)).json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


async def test_reconstruct_cache_and_delivery(client):
    study_id = await upload_regular(client)
    study = await (await client.get(f"/api/studies/{study_id}", headers=client.h)).json()
    assert study["series"][0]["warnings"] == []  # a regular series warns of nothing
    url = f"/api/studies/{study_id}/meshes"
    body = {"presets": ["bone"], "target_triangles": 40_000}
    r = await client.post(url, json=body, headers=client.h)
    assert r.status == 202, await r.text()
    job = (await r.json())["job"]
    assert job["state"] in ("queued", "running")
    done = await wait_job(client, job["id"])
    assert done["state"] == "done", done
    assert done["percent"] == 100
    [mesh_id] = done["mesh_ids"]
    # the same request again is answered from the content-addressed cache
    r = await client.post(url, json=body, headers=client.h)
    assert r.status == 200
    [mesh] = (await r.json())["meshes"]
    assert mesh["id"] == mesh_id and 0 < mesh["triangles"] <= 40_000
    # delivery: ETag -> 304, immutable, ranges, formats
    for query in ("", "?format=plain", "?lod=0", "?format=plain&lod=0"):
        r = await client.get(f"/api/meshes/{mesh_id}.glb{query}", headers=client.h)
        assert r.status == 200, query
        data = await r.read()
        assert data[:4] == b"glTF"
        assert "immutable" in r.headers["Cache-Control"]
        etag = r.headers["ETag"]
        r2 = await client.get(f"/api/meshes/{mesh_id}.glb{query}", headers={**client.h, "If-None-Match": etag})
        assert r2.status == 304
    r = await client.get(f"/api/meshes/{mesh_id}.glb?format=plain", headers={**client.h, "Range": "bytes=0-11"})
    assert r.status == 206
    assert (await r.read())[:4] == b"glTF" and r.headers["Content-Range"].startswith("bytes 0-11/")
    r = await client.get(f"/api/meshes/{mesh_id}.glb", headers={**client.h, "Range": "bytes=999999999-"})
    assert r.status == 416
    r = await client.get(f"/api/meshes/{mesh_id}.glb?format=obj", headers=client.h)
    assert r.status == 400
    # delete removes the study and everything derived from it
    r = await client.delete(f"/api/studies/{study_id}", headers=client.h)
    assert r.status == 204
    assert (await client.get(f"/api/meshes/{mesh_id}.glb", headers=client.h)).status == 404
    assert (await client.get(f"/api/studies/{study_id}", headers=client.h)).status == 404


async def test_metrics_are_prometheus_text(client):
    await client.get("/api/health")
    r = await client.get("/metrics")
    assert r.status == 200
    text = await r.text()
    assert "theatrum_http_requests_total" in text and "theatrum_sockets" in text and "theatrum_rooms" in text
    assert "theatrum_job_duration_seconds" in text


# -- the OpenAPI document stays true -------------------------------------------------------------------------
def test_every_route_is_documented():
    doc = openapi_document()
    documented = {(path, method) for path, item in doc["paths"].items() for method in item if method != "parameters"}
    served = set()
    for r in routes():
        path = r.path.replace("{study_id}", "{study_id}")
        served.add((path, r.method.lower()))
    assert served == documented, f"undocumented: {served - documented}; stale: {documented - served}"
    json.dumps(doc)


async def test_json_responses_are_gzipped_when_accepted(client):
    r = await client.get("/api/openapi.json", headers={**client.h, "Accept-Encoding": "gzip"})
    assert r.status == 200
    assert r.headers.get("Content-Encoding") == "gzip"
    assert (await r.json())["openapi"].startswith("3.1")
    r = await client.get("/api/openapi.json", headers={**client.h, "Accept-Encoding": "identity"})
    assert "Content-Encoding" not in r.headers


async def test_bounded_queue_and_cancellation(aiohttp_client, tmp_path):
    app = build_app(Settings(data=tmp_path / "d", workers=1, max_queued_jobs=1))
    c = await aiohttp_client(app)
    c.h = auth(app)
    study_id = await upload_regular(c)
    url = f"/api/studies/{study_id}/meshes"
    runner, started = app[JOBS], asyncio.Event()
    notify = runner.on_update

    async def on_update(job: dict) -> None:
        if job["state"] == "running":
            started.set()
        await notify(job)

    runner.on_update = on_update
    jobs = []
    # The first job is the longest (two presets at the full budget): it is still running when cancelled.
    for body in ({"presets": ["bone", "skin"]}, {"presets": ["bone"], "target_triangles": 21_000}):
        r = await c.post(url, json=body, headers=c.h)
        assert r.status == 202, await r.text()
        jobs.append((await r.json())["job"]["id"])
        await asyncio.wait_for(started.wait(), 60)  # the first left the queue for the worker; the second waits
    r = await c.post(url, json={"presets": ["bone"], "target_triangles": 22_000}, headers=c.h)
    assert r.status == 429, await r.text()
    assert (await r.json())["error"] == "queue_full" and "Retry-After" in r.headers
    # the same request as a queued job joins that job instead of queueing another
    r = await c.post(url, json={"presets": ["bone"], "target_triangles": 21_000}, headers=c.h)
    assert r.status == 202 and (await r.json())["job"]["id"] == jobs[1]
    # cancel the running job: it is stopped and reported cancelled; cancelling again is a conflict
    r = await c.delete(f"/api/jobs/{jobs[0]}", headers=c.h)
    assert r.status == 200 and (await r.json())["state"] == "cancelled"
    assert (await c.delete(f"/api/jobs/{jobs[0]}", headers=c.h)).status == 409
    done = await wait_job(c, jobs[1])
    assert done["state"] == "done", done
    assert (await (await c.get(f"/api/jobs/{jobs[0]}", headers=c.h)).json())["state"] == "cancelled"
    assert len((await (await c.get(url, headers=c.h)).json())["meshes"]) == 1


# -- the client's tables come from the server ------------------------------------------------------------------
async def test_config_is_public_and_carries_the_servers_own_tables(aiohttp_client, tmp_path):
    from reconstruction.presets import preset_names_for, presets_for
    from sessions.ops import OpKind
    from sessions.protocol import may
    from sessions.roles import Role

    app = build_app(Settings(data=tmp_path / "d", workers=1, room_max_label_length=123))
    c = await aiohttp_client(app)
    r = await c.get("/api/config")  # no token: the join page reads it
    assert r.status == 200
    config = await r.json()
    for modality in ("CT", "MR"):
        assert config["modalities"][modality] == {"presets": list(presets_for(modality)),
                                                  "default_presets": preset_names_for(modality)}
    assert config["identifying_presets"] == ["skin"]
    assert config["room_limits"]["max_label_length"] == 123 and config["room_limits"]["max_title_length"] == 200
    assert config["pose_limits"]["expire_s"] == app[SETTINGS].pose_limits.expire_s
    assert config["room_limits"]["max_slice_planes"] == 3
    assert config["pacs"] == {"configured": False}  # no THEATRUM_PACS_URL: the lobby offers no PACS search
    assert config["slices"]["windows"]["CT"][0] == {"name": "bone", "window": 1800.0, "level": 400.0}
    assert config["slices"]["px"] == {"min": 16, "max": 2048, "coarse": 128, "full": 512}
    table = config["permissions"]
    for role in Role:
        for kind in OpKind:
            grant = table["matrix"][role.value].get(kind.value)
            allowed_plainly = may(role, kind) is None
            assert (grant is not None and allowed_plainly) or (grant is None and not allowed_plainly), (role, kind)
            muted = may(role, kind, muted=True) == "you are muted by the instructor"
            assert muted == (grant is not None and kind.value in table["tool_kinds"]), (role, kind)
        for kind, grant in table["matrix"][role.value].items():
            if grant == "own":
                assert may(role, kind, own=False) is not None
            if grant == "unless_locked":
                assert may(role, kind, locked=True) == "the model is locked by the instructor"


async def test_a_series_described_by_the_patient_name_is_listed_with_a_clean_descriptor(client):
    # rt-utils' real phantom: PatientName, PatientID and SeriesDescription are all "PHANTOM_EXAMPLE".
    folder = require_path(DICOM / "rtstruct-phantom-rtutils" / "image", "the rt-utils phantom")
    r = await client.post("/api/studies", data=zip_of(folder), headers={**client.h, "Content-Type": "application/zip"})
    assert r.status == 201, await r.text()
    assert "PHANTOM_EXAMPLE" not in await r.text()
    r = await client.get("/api/studies", headers=client.h)
    text = await r.text()
    assert "PHANTOM_EXAMPLE" not in text
    (study,) = json.loads(text)["studies"]
    assert [s["description"] for s in study["series"]] == ["***"]


async def test_descriptions_stored_before_they_were_cleaned_are_cleaned_at_the_next_start(aiohttp_client, tmp_path):
    # A library imported by an earlier version: the raw SeriesDescription ("PHANTOM_EXAMPLE", the patient's
    # name) in the catalog, and no clean mark.
    folder = require_path(DICOM / "rtstruct-phantom-rtutils" / "image", "the rt-utils phantom")
    app = build_app(Settings(data=tmp_path / "data", workers=1))
    result = import_folder(app[LIBRARY], folder)
    study, series = result["study_id"], result["series"][0]["id"]
    catalog = app[CATALOG]
    catalog._execute("UPDATE studies SET clean_descriptors = 0, description = 'PHANTOM_EXAMPLE study' WHERE id = ?",
                     (study,))
    catalog._execute("UPDATE series SET description = 'PHANTOM_EXAMPLE' WHERE id = ?", (series,))
    assert catalog.studies_to_clean() == [study]
    client = await aiohttp_client(app)  # the start cleans them
    text = await (await client.get(f"/api/studies/{study}", headers=auth(app))).text()
    assert "PHANTOM_EXAMPLE" not in text
    assert json.loads(text)["description"] == "*** study" and catalog.studies_to_clean() == []


async def test_the_reconstructions_warnings_are_in_the_series_and_mesh_views(client, tmp_path):
    """The Philips phantom with one slice moved 0.4 mm along the stack: the volume keeps the true positions and
    warns of uneven spacing; the study's series view and each mesh view say so (before: only the CLI did)."""
    folder = write_uneven_philips(tmp_path / "uneven")
    r = await client.post("/api/studies", data=zip_of(folder), headers={**client.h, "Content-Type": "application/zip"})
    assert r.status == 201, await r.text()
    study_id = (await r.json())["study_id"]
    study = await (await client.get(f"/api/studies/{study_id}", headers=client.h)).json()
    (series,) = study["series"]
    assert len(series["warnings"]) == 1 and series["warnings"][0].startswith("uneven slice spacing")
    r = await client.post(f"/api/studies/{study_id}/meshes", json={"presets": ["bone"], "target_triangles": 20_000},
                          headers=client.h)
    done = await wait_job(client, (await r.json())["job"]["id"])
    (mesh_id,) = done["mesh_ids"]
    mesh = await (await client.get(f"/api/meshes/{mesh_id}", headers=client.h)).json()
    assert mesh["warnings"] == series["warnings"]
    listed = await (await client.get(f"/api/studies/{study_id}/meshes", headers=client.h)).json()
    assert listed["meshes"][0]["warnings"] == series["warnings"]

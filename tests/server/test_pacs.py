"""PACS import over DICOMweb, against a real Orthanc holding the Philips phantom (see tests/orthanc.py).

The phantom is two studies of one patient: S21570 (a 28-slice axial series + a scout) and S21610 (a 54-slice
tilted series + a scout). Searches must come back de-identified; imports must land in the library with the
right series, report progress over socket.io, be idempotent, and leave no temp files behind.
"""

from __future__ import annotations

import base64
import json
import time
from itertools import pairwise
from pathlib import Path

import pydicom
import pytest
from aiohttp import web
from conftest import free_port, require_path
from orthanc import PHILIPS, orthanc_fixture, phantom_files  # noqa: F401

from server.api.pacs import RefCodec
from server.app import build_app
from server.appkeys import ADMIN_TOKEN, SIO, TMP
from server.config import Settings

SUMMARY_KEYS = {"ref", "study_date", "description", "modalities", "series", "instances"}
VOLUME_SLICES = {"S21570": 28, "S21610": 54}  # per study folder: its one volume series


def auth(app) -> dict:
    return {"Authorization": f"Bearer {app[ADMIN_TOKEN]}"}


async def client_for(aiohttp_client, data: Path, pacs_url: str = "", **settings):
    app = build_app(Settings(data=data, workers=1, pacs_url=pacs_url, **settings))
    c = await aiohttp_client(app)
    c.h = auth(app)
    return c


@pytest.fixture
async def client(aiohttp_client, tmp_path, orthanc):
    return await client_for(aiohttp_client, tmp_path / "data", orthanc.dicomweb_url)


@pytest.fixture
async def no_pacs_client(aiohttp_client, tmp_path):
    return await client_for(aiohttp_client, tmp_path / "data")


@pytest.fixture(scope="module")
def phantom() -> dict:
    """What the phantom's headers say: identifying values per kind, and each study's UID by folder."""
    identifying: dict[str, set[str]] = {}
    study_uid: dict[str, str] = {}
    for path in phantom_files(require_path(PHILIPS, "the Philips phantom in ../shared/dicom")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        study_uid[path.relative_to(PHILIPS / "DICOM").parts[0]] = ds.StudyInstanceUID
        for kw in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
                   "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            value = str(ds.get(kw, "") or "")
            if value:
                identifying.setdefault(kw, set()).add(value)
    return {"identifying": identifying, "study_uid": study_uid}


def assert_no_identifiers(text: str, phantom: dict, *, allowed_in: tuple[str, ...] = ()) -> None:
    """No identifying value of the phantom appears in ``text`` (bar inside the ``allowed_in`` strings)."""
    for allowed in allowed_in:
        text = text.replace(allowed, "")
    for kind, values in phantom["identifying"].items():
        for value in values:
            assert value not in text, f"the response leaks {kind} {value!r}"


async def search(c, **params) -> list[dict]:
    r = await c.get("/api/pacs/search", params=params, headers=c.h)
    assert r.status == 200, await r.text()
    return (await r.json())["studies"]


async def import_ref(c, body: dict) -> tuple[int, dict]:
    r = await c.post("/api/pacs/import", json=body, headers=c.h)
    return r.status, await r.json()


async def ref_by_slices(c) -> dict[int, str]:
    """The search ref of each phantom study, keyed by the slice count of its volume series."""
    studies = await search(c, PatientID="PLASTIC")
    # NumberOfStudyRelatedInstances: the volume's slices + the scout
    return {s["instances"] - 1: s["ref"] for s in studies}


# -- search -------------------------------------------------------------------------------------------------
async def test_search_finds_the_phantom_studies_de_identified(client, phantom):
    r = await client.get("/api/pacs/search", params={"PatientID": "PLASTIC"}, headers=client.h)
    assert r.status == 200
    text = await r.text()
    studies = json.loads(text)["studies"]
    assert len(studies) == 2
    for s in studies:
        assert set(s) == SUMMARY_KEYS
        assert s["study_date"] == "2015-02-06"
        assert s["modalities"] == ["CT"]
        assert s["series"] == 2
    assert sorted(s["instances"] for s in studies) == [29, 55]
    # "1A TRAUMA/PLAIN HEAD DM" holds the PatientName "HEAD": a clean descriptor strikes it (PS3.15).
    assert {s["description"] for s in studies} == {"1A TRAUMA/PLAIN *** DM"}
    # Refs are ciphertext, checked below. Nothing else may carry an identifying value.
    assert_no_identifiers(text, phantom, allowed_in=tuple(s["ref"] for s in studies))
    for s in studies:
        token = base64.urlsafe_b64decode(s["ref"] + "=" * (-len(s["ref"]) % 4))
        for uid in phantom["study_uid"].values():
            assert uid.encode() not in token and uid not in s["ref"]


@pytest.mark.parametrize(("params", "count"), [
    ({}, 2),
    ({"StudyDate": "20150206"}, 2),
    ({"StudyDate": "20150101-20150301", "ModalitiesInStudy": "ct"}, 2),
    ({"StudyDate": "-20141231"}, 0),
    ({"ModalitiesInStudy": "MR"}, 0),
    ({"StudyDate": "20150206-"}, 2),
    ({"PatientID": "PLASTIC"}, 2),
    ({"PatientID": "SOMEONE-ELSE"}, 0),
    ({"StudyDescription": "NOTHING"}, 0),
    ({"AccessionNumber": "A1"}, 0),
    ({"limit": "1"}, 1),
    ({"PatientID": "", "StudyDate": ""}, 2),  # an empty form field is no filter
])
async def test_search_filters(client, params, count):
    # Orthanc 1.10.1 + DICOMweb 1.7 does not percent-decode QIDO values, and dicomweb-client encodes every
    # character outside [A-Za-z0-9_.~-]: so wildcards (* ?) and values with spaces cannot match there.
    assert len(await search(client, **params)) == count


async def test_search_refs_differ_between_searches(client):
    first, second = await search(client), await search(client)
    assert {s["ref"] for s in first}.isdisjoint(s["ref"] for s in second)


@pytest.mark.parametrize("query", [
    "Name=HEAD", "PatientName=HEAD", "limit=0", "limit=201", "limit=ten", "limit=-1",
    "StudyDate=2015-02-06", "StudyDate=20151301", "StudyDate=20150207-20150206", "StudyDate=-",
    "StudyDate=20150206-20150207-20150208", "ModalitiesInStudy=C%20T", "ModalitiesInStudy=CT%5CMR",
    "PatientID=A%5CB", "PatientID=A%00B", "PatientID=" + "x" * 65, "AccessionNumber=" + "1" * 17,
    "PatientID=A&PatientID=B",
])
async def test_search_rejects_bad_parameters(no_pacs_client, query):
    c = no_pacs_client
    r = await c.get(f"/api/pacs/search?{query}", headers=c.h)
    assert r.status == 400
    body = await r.json()
    assert body["error"] == "bad_parameter" and body["detail"]


# -- import -------------------------------------------------------------------------------------------------
async def test_import_by_ref_stores_each_study_with_progress(client, phantom, monkeypatch):
    app = client.server.app
    events: list[tuple[str, dict, str]] = []

    async def record(event, data=None, room=None, **kwargs):
        events.append((event, data, room))

    monkeypatch.setattr(app[SIO], "emit", record)
    refs = await ref_by_slices(client)
    assert sorted(refs) == sorted(VOLUME_SLICES.values())
    for slices, ref in refs.items():
        r = await client.post("/api/pacs/import", json={"ref": ref}, headers=client.h)
        assert r.status == 201
        text = await r.text()
        assert_no_identifiers(text, phantom)
        result = json.loads(text)
        assert result["instances"] == {"added": slices, "duplicates": 0}
        assert [s["slices"] for s in result["series"]] == [slices]
        assert len(result["skipped"]) == 1  # the scout: one projection image is not a volume

        r = await client.get(f"/api/studies/{result['study_id']}", headers=client.h)
        assert r.status == 200
        study = await r.json()
        assert [(s["modality"], s["slices"], s["rows"], s["columns"]) for s in study["series"]] == [
            ("CT", slices, 512, 512)]

        mine = [d for e, d, room in events if e == "pacs" and d["import_id"] == result["import_id"]]
        assert all(room == "admin" for e, _, room in events if e == "pacs")
        stages = [d["stage"] for d in mine]
        assert stages[0] == "retrieve" and stages[-2:] == ["import", "done"]
        retrieved = [d for d in mine if d["stage"] == "retrieve"]
        assert retrieved[0]["done"] == 0 and retrieved[-1]["done"] == retrieved[-1]["total"] == slices + 1
        done = [d["done"] for d in retrieved]
        assert all(a < b for a, b in pairwise(done)), "retrieve progress must only move forward"

    r = await client.get("/api/studies", headers=client.h)
    text = await r.text()
    assert_no_identifiers(text, phantom)  # the listing's descriptions are clean too ("HEAD" struck)
    listed = json.loads(text)
    assert sorted(s["series"][0]["slices"] for s in listed["studies"]) == [28, 54]
    assert {s["description"] for s in listed["studies"]} == {"1A TRAUMA/PLAIN *** DM"}
    assert not list(Path(app[TMP]).iterdir()), "the import left temp files behind"


async def test_import_again_is_idempotent(client, phantom):
    refs = await ref_by_slices(client)
    status, first = await import_ref(client, {"ref": refs[28]})
    assert status == 201 and first["instances"]["added"] == 28
    status, again = await import_ref(client, {"ref": refs[28]})
    assert status == 200
    assert again["instances"] == {"added": 0, "duplicates": 28}
    assert again["study_id"] == first["study_id"]
    status, by_uid = await import_ref(client, {"study_instance_uid": phantom["study_uid"]["S21570"]})
    assert status == 200
    assert by_uid["study_id"] == first["study_id"] and by_uid["instances"]["added"] == 0
    assert_no_identifiers(json.dumps(by_uid), phantom)
    r = await client.get("/api/studies", headers=client.h)
    assert len((await r.json())["studies"]) == 1


async def test_import_of_a_study_not_on_the_pacs_is_404(client):
    status, body = await import_ref(client, {"study_instance_uid": "1.2.826.0.1.3680043.2.1125.1"})
    assert status == 404 and body["error"] == "not_found"
    assert not list(Path(client.server.app[TMP]).iterdir())


async def test_unknown_forged_or_foreign_refs_are_refused(client, phantom):
    refs = list((await ref_by_slices(client)).values())
    foreign = RefCodec("another server's secret").issue(phantom["study_uid"]["S21570"])
    tampered = refs[0][:40] + ("A" if refs[0][40] != "A" else "B") + refs[0][41:]
    for ref in ("nonsense", tampered, foreign, ""):
        status, body = await import_ref(client, {"ref": ref})
        assert status == 400, ref
        assert body["error"] in ("unknown_ref", "bad_parameter")


async def test_refs_expire(client, monkeypatch):
    ref = (await search(client))[0]["ref"]
    later = time.time() + 25 * 3600
    monkeypatch.setattr("cryptography.fernet.time.time", lambda: later)
    status, body = await import_ref(client, {"ref": ref})
    assert (status, body["error"]) == (400, "unknown_ref")


@pytest.mark.parametrize("body", [
    {}, {"ref": 5}, {"ref": None}, {"study_instance_uid": "not-a-uid"}, {"study_instance_uid": "1.02.3"},
    {"study_instance_uid": "1." + "2" * 64}, {"ref": "x", "study_instance_uid": "1.2.3"}, {"uid": "1.2.3"},
])
async def test_import_rejects_bad_bodies(no_pacs_client, body):
    c = no_pacs_client
    r = await c.post("/api/pacs/import", json=body, headers=c.h)
    assert r.status == 400
    assert set(await r.json()) == {"error", "detail"}


async def test_import_needs_a_json_body(no_pacs_client):
    c = no_pacs_client
    r = await c.post("/api/pacs/import", data=b"ref=abc", headers={**c.h, "Content-Type": "text/plain"})
    assert r.status == 415
    r = await c.post("/api/pacs/import", data=b"{ref", headers={**c.h, "Content-Type": "application/json"})
    assert r.status == 400


# -- configuration, failures and access ---------------------------------------------------------------------
async def test_no_pacs_configured_is_503(no_pacs_client):
    c = no_pacs_client
    r = await c.get("/api/pacs/search", params={"PatientID": "X"}, headers=c.h)
    assert r.status == 503 and (await r.json())["error"] == "no_pacs"
    r = await c.post("/api/pacs/import", json={"study_instance_uid": "1.2.3"}, headers=c.h)
    assert r.status == 503 and (await r.json())["error"] == "no_pacs"
    assert not list(Path(c.server.app[TMP]).iterdir())


@pytest.mark.parametrize("url", ["ftp://pacs.example/dicom-web", "pacs.example"])
async def test_a_malformed_pacs_url_is_503(aiohttp_client, tmp_path, url):
    c = await client_for(aiohttp_client, tmp_path / "d", url)
    r = await c.get("/api/pacs/search", headers=c.h)
    assert r.status == 503 and (await r.json())["error"] == "no_pacs"


async def test_pacs_down_is_502(aiohttp_client, tmp_path):
    c = await client_for(aiohttp_client, tmp_path / "d", f"http://127.0.0.1:{free_port()}/dicom-web")
    r = await c.get("/api/pacs/search", params={"PatientID": "PLASTIC"}, headers=c.h)
    assert r.status == 502
    body = await r.json()
    assert body["error"] == "pacs_unavailable" and "PLASTIC" not in body["detail"]
    r = await c.post("/api/pacs/import", json={"study_instance_uid": "1.2.3"}, headers=c.h)
    assert r.status == 502 and (await r.json())["error"] == "pacs_unavailable"
    assert not list(Path(c.server.app[TMP]).iterdir())


@pytest.fixture
async def fake_pacs(aiohttp_server):
    """A stand-in DICOMweb server whose answer each test sets; it records the requests it gets."""
    state = {"status": 200, "body": "[]", "requests": []}

    async def handler(request: web.Request) -> web.Response:
        state["requests"].append(request)
        return web.Response(status=state["status"], text=state["body"], content_type="application/dicom+json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = await aiohttp_server(app)
    state["url"] = str(server.make_url("/dicom-web"))
    return state


@pytest.mark.parametrize(("status", "body", "detail"), [
    (500, "oops", "HTTP 500"),
    (401, "", "THEATRUM_PACS_USER"),
    (200, "{not json", "malformed"),
])
async def test_a_failing_pacs_is_502(aiohttp_client, tmp_path, fake_pacs, status, body, detail):
    fake_pacs.update(status=status, body=body)
    c = await client_for(aiohttp_client, tmp_path / "d", fake_pacs["url"])
    r = await c.get("/api/pacs/search", params={"PatientID": "PLASTIC"}, headers=c.h)
    assert r.status == 502
    answer = await r.json()
    assert answer["error"] == "pacs_unavailable" and detail in answer["detail"]
    assert "PLASTIC" not in answer["detail"]


async def test_search_sends_filters_fields_and_credentials(aiohttp_client, tmp_path, fake_pacs):
    c = await client_for(aiohttp_client, tmp_path / "d", fake_pacs["url"], pacs_user="theatrum",
                         pacs_password="s3cret")
    assert await search(c, PatientID="PLASTIC", StudyDate="20150206", limit="7") == []
    (seen,) = fake_pacs["requests"]
    assert seen.path == "/dicom-web/studies"
    assert seen.query["PatientID"] == "PLASTIC" and seen.query["StudyDate"] == "20150206"
    assert seen.query["limit"] == "7"
    assert {"ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
            "StudyDescription", "StudyDate"} <= set(seen.query.getall("includefield"))
    expected = "Basic " + base64.b64encode(b"theatrum:s3cret").decode()
    assert seen.headers["Authorization"] == expected


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/pacs/search"), ("POST", "/api/pacs/import")])
async def test_pacs_endpoints_need_the_token(no_pacs_client, method, path):
    c = no_pacs_client
    r = await c.request(method, path, json={"study_instance_uid": "1.2.3"})
    assert r.status == 401
    r = await c.request(method, path, json={"study_instance_uid": "1.2.3"},
                        headers={"Authorization": "Bearer wrong"})
    assert r.status == 403

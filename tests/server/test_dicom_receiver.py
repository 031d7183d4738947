"""The DICOM receiver (C-STORE SCP): a PACS or a modality "sends to VR". Received instances go through the upload
import (dedupe, de-identified listing) and the study appears in the lobby; callers are allowed by AE title and
address; truncated datasets are refused and nothing of them is stored; C-ECHO answers. Senders: pynetdicom,
dcmtk's storescu, and a real Orthanc answering a C-MOVE."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from conftest import DICOM, free_port, require_path, require_tool
from hubtools import admin, settings
from orthanc import AE_TITLE, DICOMWEB_PLUGIN, ORTHANC, phantom_files, run_orthanc
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelMove, Verification

from server.app import build_app
from server.appkeys import CATALOG, RECEIVER, SIO, TMP
from server.services.receiver import Peer, allowed, parse_peers

PHILIPS = DICOM / "ct-head-phantom-philips"
REGULAR = PHILIPS / "DICOM" / "S21570" / "S2010"
TILTED = PHILIPS / "DICOM" / "S21610" / "S2010"
STORESCU = "/usr/bin/storescu"


def images(folder: Path) -> list[Path]:
    return sorted(p for p in require_path(folder, "the Philips phantom").iterdir() if p.name != "DIRFILE")


async def receiving(aiohttp_server, data: Path, **overrides):
    """A running server whose receiver listens on a free port: (app, http session, emitted socket events)."""
    import aiohttp

    app = build_app(settings(data, **{"dicom_port": free_port(), **overrides}))
    emitted: list[tuple[str, dict, str | None]] = []

    async def emit(event, payload=None, room=None, **kwargs):
        emitted.append((event, payload, room))

    app[SIO].emit = emit
    server = await aiohttp_server(app, shutdown_timeout=0.5)
    http = aiohttp.ClientSession(str(server.make_url("")).rstrip("/"))
    return app, http, emitted


@pytest.fixture
async def receiver(aiohttp_server, tmp_path):
    app, http, emitted = await receiving(aiohttp_server, tmp_path / "data")
    yield app, http, emitted
    await http.close()


def scu(ae_title: str = "MODALITY") -> AE:
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    return ae


async def send(port: int, files: list, ae_title: str = "MODALITY", *, ae: AE | None = None) -> list[int]:
    """C-STORE each file (a path: sent as its bytes are, undecoded) in one association from `ae` (default: a
    CT modality called `ae_title`); the statuses."""
    def run() -> list[int]:
        assoc = (ae or scu(ae_title)).associate("127.0.0.1", port, ae_title="THEATRUM")
        assert assoc.is_established, "the association was not accepted"
        statuses = [int(assoc.send_c_store(path).Status) for path in files]
        assoc.release()
        return statuses

    return await asyncio.to_thread(run)


async def studies(http, app) -> list[dict]:
    return (await (await http.get("/api/studies", headers=admin(app))).json())["studies"]


async def until_count(listing, count: int, what: str) -> list[dict]:
    """`await listing()` until it holds `count` items (an import runs when the association is released)."""
    found: list[dict] = []
    for _ in range(400):
        found = await listing()
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {count} {what}: {found}")


async def until_studies(http, app, count: int) -> list[dict]:
    return await until_count(lambda: studies(http, app), count, "studies in the library")


# ---- pynetdicom as the sender ------------------------------------------------------------------------------

async def test_c_echo_is_answered(receiver):
    app, _, _ = receiver

    def echo() -> int:
        assoc = scu().associate("127.0.0.1", app[RECEIVER].port, ae_title="THEATRUM")
        status = int(assoc.send_c_echo().Status)
        assoc.release()
        return status

    assert await asyncio.to_thread(echo) == 0x0000


async def test_a_series_sent_is_imported_deidentified_and_the_lobby_is_told(receiver, caplog):
    caplog.set_level(logging.DEBUG)
    app, http, emitted = receiver
    files = images(REGULAR)
    assert await send(app[RECEIVER].port, files) == [0x0000] * len(files)
    (study,) = await until_studies(http, app, 1)
    assert [(s["modality"], s["slices"], s["rows"]) for s in study["series"]] == [("CT", 28, 512)]
    assert study["instances"] == 28
    text = await (await http.get(f"/api/studies/{study['id']}", headers=admin(app))).text()
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    identifying = (str(header.PatientName), header.PatientID, header.StudyInstanceUID, header.SeriesInstanceUID,
                   header.SOPInstanceUID, str(header.InstitutionName))
    for value in identifying:
        assert value not in text
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "MODALITY at 127.0.0.1: 28 instance(s) received, 28 added to study" in logged
    for value in identifying:  # the receiver (and pynetdicom under it) log nothing identifying
        assert value not in logged, value
    for _ in range(200):
        if any(event == "studies" for event, _, _ in emitted):
            break
        await asyncio.sleep(0.02)
    assert ("studies", {"study_id": study["id"], "source": "dicom"}, "admin") in emitted
    # Sending it again changes nothing (deduplicated by SOPInstanceUID and content).
    assert await send(app[RECEIVER].port, files[:5]) == [0x0000] * 5
    await asyncio.sleep(0.3)
    assert app[CATALOG].instance_count(study["id"]) == 28 and len(await studies(http, app)) == 1
    assert not list(Path(app[TMP]).iterdir()), "the receiver left files behind"


async def test_a_truncated_dataset_is_refused_and_nothing_is_stored(receiver, tmp_path):
    app, http, _ = receiver
    whole = images(REGULAR)[0]
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(whole.read_bytes()[:-5000])  # the pixel data cut short
    cut_header = tmp_path / "header.dcm"
    cut_header.write_bytes(whole.read_bytes()[:700])  # cut inside the header
    assert await send(app[RECEIVER].port, [truncated, cut_header]) == [0xC000, 0xC000]
    await asyncio.sleep(0.3)
    assert await studies(http, app) == [] and app[CATALOG].studies() == []
    assert not list(Path(app[TMP]).iterdir())


async def test_a_wrong_ae_title_is_rejected_when_peers_are_configured(aiohttp_server, tmp_path):
    app, http, _ = await receiving(aiohttp_server, tmp_path / "data", dicom_peers=("PACS1@127.0.0.1",))
    try:
        def associate(title: str):
            assoc = scu(title).associate("127.0.0.1", app[RECEIVER].port, ae_title="THEATRUM")
            result = (assoc.is_established, assoc.is_rejected)
            if assoc.is_established:
                assoc.release()
            return result

        assert await asyncio.to_thread(associate, "INTRUDER") == (False, True)
        assert await asyncio.to_thread(associate, "PACS1") == (True, False)
    finally:
        await http.close()


def test_who_may_send():
    assert allowed((), "ANY", "127.0.0.1") and allowed((), "ANY", "::1") and allowed((), "X", "::ffff:127.0.0.1")
    assert not allowed((), "ANY", "10.1.2.3") and not allowed((), "ANY", "not an address")
    peers = (Peer("PACS1", frozenset({"10.1.2.3"})),)
    assert allowed(peers, "PACS1", "10.1.2.3") and allowed(peers, "PACS1 ", "10.1.2.3")
    assert not allowed(peers, "PACS2", "10.1.2.3") and not allowed(peers, "PACS1", "10.1.2.4")
    assert not allowed(peers, "PACS1", "127.0.0.1")  # with peers, loopback is not implied
    assert parse_peers(("ORTHANC@127.0.0.1",)) == (Peer("ORTHANC", frozenset({"127.0.0.1"})),)
    for bad in ("ORTHANC", "@127.0.0.1", "ORTHANC@", "A-TITLE-LONGER-THAN-16@127.0.0.1", "X@host.invalid"):
        with pytest.raises(ValueError, match="DICOM peer"):
            parse_peers((bad,))


# ---- dcmtk's storescu, a second implementation ---------------------------------------------------------

async def test_dcmtk_storescu_sends_a_study(receiver):
    app, http, _ = receiver
    require_tool(STORESCU, "dcmtk's storescu (Debian package dcmtk)")
    files = images(REGULAR)
    run = await asyncio.to_thread(subprocess.run, [STORESCU, "-aet", "DCMTK", "-aec", "THEATRUM", "127.0.0.1",
                                                   str(app[RECEIVER].port), *map(str, files)],
                                  capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    (study,) = await until_studies(http, app, 1)
    assert study["series"][0]["slices"] == 28 and study["instances"] == 28


# ---- a real Orthanc, moving a series to us -----------------------------------------------------------------

@pytest.fixture
def dicom_orthanc(tmp_path):
    """An Orthanc with its DICOM server on, holding the phantom's tilted study, that knows THEATRUM at a port
    chosen here: (Orthanc, that port)."""
    require_tool(ORTHANC, "Orthanc (Debian package `orthanc`)")
    require_tool(DICOMWEB_PLUGIN, "Orthanc's DICOMweb plugin (Debian package `orthanc-dicomweb`)")
    port = free_port()
    with run_orthanc(tmp_path / "orthanc", {"theatrum": ["THEATRUM", "127.0.0.1", port]}) as orthanc:
        for path in phantom_files(require_path(PHILIPS, "the Philips phantom")):
            if path.is_relative_to(PHILIPS / "DICOM" / "S21610"):
                orthanc.store(path)
        yield orthanc, port


async def test_orthanc_moves_a_series_to_the_receiver(aiohttp_server, tmp_path, dicom_orthanc):
    orthanc, port = dicom_orthanc
    app, http, _ = await receiving(aiohttp_server, tmp_path / "data", dicom_port=port,
                                   dicom_peers=(f"{AE_TITLE}@127.0.0.1",))
    try:
        header = pydicom.dcmread(images(TILTED)[0], stop_before_pixels=True)

        def move() -> list[int]:
            ae = AE(ae_title="THEATRUM")
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title=AE_TITLE)
            assert assoc.is_established, "Orthanc refused the C-MOVE association"
            query = pydicom.Dataset()
            query.QueryRetrieveLevel = "SERIES"
            query.StudyInstanceUID, query.SeriesInstanceUID = header.StudyInstanceUID, header.SeriesInstanceUID
            statuses = [int(status.Status) for status, _ in
                        assoc.send_c_move(query, "THEATRUM", StudyRootQueryRetrieveInformationModelMove)
                        if status is not None and "Status" in status]
            assoc.release()
            return statuses

        statuses = await asyncio.to_thread(move)
        assert statuses[-1] == 0x0000, [hex(s) for s in statuses]
        (study,) = await until_studies(http, app, 1)
        assert [(s["slices"], s["rows"]) for s in study["series"]] == [(54, 512)]  # complete: every slice
        assert study["instances"] == 54
    finally:
        await http.close()
        shutil.rmtree(tmp_path / "orthanc", ignore_errors=True)


async def test_associations_past_the_limit_are_rejected(aiohttp_server, tmp_path):
    app, http, _ = await receiving(aiohttp_server, tmp_path / "data", dicom_max_associations=1)
    try:
        def two() -> tuple[bool, bool, bool]:
            first = scu("ONE").associate("127.0.0.1", app[RECEIVER].port, ae_title="THEATRUM")
            second = scu("TWO").associate("127.0.0.1", app[RECEIVER].port, ae_title="THEATRUM")
            result = (first.is_established, second.is_established, second.is_rejected)
            for assoc in (first, second):
                if assoc.is_established:
                    assoc.release()
            return result

        assert await asyncio.to_thread(two) == (True, False, True)
    finally:
        await http.close()


def test_theatrum_serve_receives_dicom_on_its_port_and_refuses_a_bad_peer(tmp_path):
    from serverproc import THEATRUM, ServerProcess

    port = free_port()
    server = ServerProcess.start(tmp_path / "data", env={"THEATRUM_DICOM_PORT": str(port)})
    try:
        assert f"Receiving DICOM as THEATRUM on 127.0.0.1:{port}" in server.output()
        assoc = scu().associate("127.0.0.1", port, ae_title="THEATRUM")
        assert int(assoc.send_c_echo().Status) == 0x0000
        assoc.release()
    finally:
        server.stop()
    run = subprocess.run([str(THEATRUM), "serve", "--data", str(tmp_path / "other"), "--port", str(free_port()),
                          "--dicom-port", str(free_port()), "--ae-title", "VR"],
                         env={"PATH": "/usr/bin:/bin", "THEATRUM_DICOM_PEERS": "PACS"}, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "DICOM peer 'PACS' is not AETITLE@host" in run.stderr


# ---- segmentations sent by C-STORE -------------------------------------------------------------------------

LIVER = DICOM / "seg-liver-dcmqi"
RT_PHANTOM = DICOM / "rtstruct-phantom-rtutils"


def segmentation_scu(ae_title: str = "PLANNING") -> AE:
    from pynetdicom.sop_class import RTStructureSetStorage, SegmentationStorage

    ae = AE(ae_title=ae_title)
    for uid in (CTImageStorage, SegmentationStorage, RTStructureSetStorage):
        ae.add_requested_context(uid)
    return ae


async def until_segmentations(http, app, study_id: str, count: int) -> list[dict]:
    async def segmentations() -> list[dict]:
        body = await (await http.get(f"/api/studies/{study_id}", headers=admin(app))).json()
        return body.get("segmentations", [])

    return await until_count(segmentations, count, f"segmentations in study {study_id}")


async def test_a_seg_sent_with_its_images_and_an_rtstruct_sent_after_them_are_imported(receiver):
    app, http, _ = receiver
    port = app[RECEIVER].port
    liver = sorted(require_path(LIVER / "image", "the dcmqi liver case").iterdir())
    statuses = await send(port, ae=segmentation_scu(), files=[*liver, LIVER / "seg" / "liver.dcm"])
    assert statuses == [0x0000] * 4
    (study,) = await until_studies(http, app, 1)
    (seg,) = await until_segmentations(http, app, study["id"], 1)
    assert seg["format"] == "SEG" and [s["name"] for s in seg["structures"]] == ["Liver"]

    # A planning system sends the structure set later, in its own association, after the images.
    images = sorted(require_path(RT_PHANTOM / "image", "the rt-utils phantom").iterdir())
    assert await send(port, ae=segmentation_scu(), files=images) == [0x0000] * len(images)
    await until_studies(http, app, 2)
    assert await send(port, ae=segmentation_scu(), files=[RT_PHANTOM / "rtstruct" / "rt.dcm"]) == [0x0000]
    header = pydicom.dcmread(RT_PHANTOM / "rtstruct" / "rt.dcm", stop_before_pixels=True)
    names = sorted(str(roi.ROIName) for roi in header.StructureSetROISequence)
    for candidate in await studies(http, app):
        if candidate["id"] != study["id"]:
            (rt,) = await until_segmentations(http, app, candidate["id"], 1)
    assert rt["format"] == "RTSTRUCT" and sorted(s["name"] for s in rt["structures"]) == names
    assert not list(Path(app[TMP]).iterdir()), "the receiver left files behind"


async def test_a_truncated_seg_is_refused_and_a_seg_of_no_stored_study_imports_nothing(receiver, tmp_path):
    app, http, _ = receiver
    port = app[RECEIVER].port
    whole = require_path(LIVER / "seg" / "liver.dcm", "the dcmqi liver case").read_bytes()
    truncated = tmp_path / "truncated-seg.dcm"
    truncated.write_bytes(whole[:-2000])  # the frames cut short
    assert await send(port, ae=segmentation_scu(), files=[truncated]) == [0xC000]
    # Read whole, but its images never came: nothing to segment, nothing stored.
    assert await send(port, ae=segmentation_scu(), files=[LIVER / "seg" / "liver.dcm"]) == [0x0000]
    await asyncio.sleep(0.5)
    assert await studies(http, app) == [] and app[CATALOG].studies() == []
    assert not list(Path(app[TMP]).iterdir())

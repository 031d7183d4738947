"""Segmentations through the one import path: uploaded with their images or after them, matched to a series of
their study, listed de-identified with their structures, meshed by a job into one GLB with a node per
structure; and refused with a clear 400 and nothing stored when they fit no series."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from conftest import DICOM, SYNTHETIC_PATIENT, require_path
from test_server_api import auth, wait_job, zip_of

from reconstruction.draco import read_glb
from server.app import build_app
from server.appkeys import ARTIFACTS, CATALOG
from server.config import Settings

LIVER = DICOM / "seg-liver-dcmqi"
LUNG = DICOM / "rtstruct-lung-4dlung"
ABDOMEN = DICOM / "labelmap-abdomen-totalseg"


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    app = build_app(Settings(data=tmp_path / "data", workers=1))
    c = await aiohttp_client(app)
    c.h = auth(app)
    c.app_ = app
    return c


def zipped(files: dict[str, Path | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, source in files.items():
            z.writestr(name, source if isinstance(source, bytes) else source.read_bytes())
    return buf.getvalue()


async def post_zip(client, data: bytes, study: str | None = None):
    url = "/api/studies" + (f"?study={study}" if study else "")
    return await client.post(url, data=data, headers={**client.h, "Content-Type": "application/zip"})


def stored_files(app) -> set[str]:
    return {path.name for _, _, path in app[ARTIFACTS].stored()}


async def test_a_seg_uploaded_after_its_images_is_matched_listed_and_meshed(client):
    require_path(LIVER, LIVER.name)
    r = await post_zip(client, zip_of(LIVER / "image"))
    assert r.status == 201, await r.text()
    study_id = (await r.json())["study_id"]

    r = await post_zip(client, zipped({"seg/liver.dcm": LIVER / "seg" / "liver.dcm",
                                       "seg/partial_overlaps.dcm": LIVER / "seg" / "partial_overlaps.dcm"}))
    assert r.status == 200, await r.text()  # no new instance: the segmentations went to the same study
    body = await r.json()
    assert body["study_id"] == study_id
    assert [s["format"] for s in body["segmentations"]] == ["SEG", "SEG"]
    study = await (await client.get(f"/api/studies/{study_id}", headers=client.h)).json()
    liver, overlaps = study["segmentations"]
    assert liver["series_id"] == study["series"][0]["id"]
    (structure,) = liver["structures"]
    assert (structure["name"], structure["color"]) == ("Liver", "#dd8265")
    assert structure["volume_ml"] == pytest.approx(107_098 * 0.810547**2 * 1.0 / 1000, rel=1e-3)
    assert [s["name"] for s in overlaps["structures"]] == ["GREEN", "ORANGE", "PURPLE", "LIGHT_BLUE", "DARK_BLUE"]
    # De-identified: nothing of the header but the labels.
    text = await (await client.get(f"/api/studies/{study_id}", headers=client.h)).text()
    for secret in ("JANCT000", "99000", "QIN IOWA", "1.2.392.200103"):
        assert secret not in text

    r = await client.post(f"/api/studies/{study_id}/meshes", json={"segmentation": overlaps["id"]}, headers=client.h)
    assert r.status == 202, await r.text()
    job = await wait_job(client, (await r.json())["job"]["id"])
    assert job["state"] == "done", job
    (mesh_id,) = job["mesh_ids"]
    mesh = await (await client.get(f"/api/meshes/{mesh_id}", headers=client.h)).json()
    assert (mesh["preset"], mesh["segmentation_id"]) == ("structures", overlaps["id"])
    glb = await (await client.get(f"/api/meshes/{mesh_id}.glb?format=plain", headers=client.h)).read()
    doc, _ = read_glb(glb)
    assert [n["name"] for n in doc["nodes"]] == ["GREEN", "ORANGE", "PURPLE", "LIGHT_BLUE", "DARK_BLUE"]
    assert [n["extras"]["structure"] for n in doc["nodes"]] == [1, 2, 3, 4, 5]
    for secret in (b"JANCT000", b"99000", b"1.2.392.200103"):
        assert secret not in glb
    # Asked again: the same mesh, from the cache.
    r = await client.post(f"/api/studies/{study_id}/meshes", json={"segmentation": overlaps["id"]}, headers=client.h)
    assert r.status == 200 and (await r.json())["meshes"][0]["id"] == mesh_id


async def test_an_rtstruct_and_a_nifti_map_come_with_their_images(client):
    require_path(LUNG, LUNG.name)
    require_path(ABDOMEN, ABDOMEN.name)
    files = {f"ct/{p.name}": p for p in (LUNG / "image").iterdir()}
    r = await post_zip(client, zipped({**files, "rs/1-1.dcm": LUNG / "rtstruct" / "1-1.dcm"}))
    assert r.status == 201, await r.text()
    (segmentation,) = (await r.json())["segmentations"]
    assert [s["name"] for s in segmentation["structures"]] == ["Tumor_c40", "LN_c40", "Carina_c40", "Vertebra_c40"]
    assert segmentation["structures"][0]["color"] == "#ff0000"

    # The TotalSegmentator CT has empty UIDs: its study and instances are named by their frame of reference
    # and content; the NIfTI map comes with it.
    files = {f"ct/{p.name}": p for p in (ABDOMEN / "image").iterdir()}
    r = await post_zip(client, zipped({**files, "seg/map.nii.gz": ABDOMEN / "labels" / "example_seg_dicom.nii.gz"}))
    assert r.status == 201, await r.text()
    body = await r.json()
    (segmentation,) = body["segmentations"]
    assert segmentation["format"] == "NIfTI" and len(segmentation["structures"]) == 31
    assert body["instances"]["added"] == 20
    assert segmentation["series_id"] == body["series"][0]["id"]


async def test_segmentations_that_fit_no_series_are_refused_and_nothing_is_stored(client, tmp_path):
    require_path(LIVER, LIVER.name)
    require_path(ABDOMEN, ABDOMEN.name)
    r = await post_zip(client, zip_of(LIVER / "image"))
    study_id = (await r.json())["study_id"]
    app = client.app_
    before = stored_files(app)

    # A SEG of another frame of reference: the liver SEG with its frame of reference changed.
    import pydicom

    ds = pydicom.dcmread(LIVER / "seg" / "liver.dcm")
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.1"
    buf = io.BytesIO()
    ds.save_as(buf)
    r = await post_zip(client, zipped({"other.dcm": buf.getvalue()}))
    assert r.status == 400
    body = await r.json()
    assert body["error"] == "no_matching_series" and "another frame of reference" in body["detail"]

    # A truncated SEG.
    data = (LIVER / "seg" / "liver.dcm").read_bytes()
    r = await post_zip(client, zipped({"cut.dcm": data[: len(data) - 30_000]}))
    assert r.status == 400
    assert (await r.json())["error"] in ("bad_segmentation", "no_matching_series")

    # A NIfTI map of another shape, put into the liver's study.
    import nibabel as nib

    image = nib.load(ABDOMEN / "labels" / "example_seg_dicom.nii.gz")
    nib.save(nib.Nifti1Image(image.get_fdata()[:, :, :2].astype("uint8"), image.affine), tmp_path / "small.nii.gz")
    r = await post_zip(client, zipped({"small.nii.gz": tmp_path / "small.nii.gz"}), study=study_id)
    assert r.status == 400
    body = await r.json()
    assert body["error"] == "no_matching_series" and "grid" in body["detail"]
    # A NIfTI map alone, into no study: it cannot know its images.
    r = await post_zip(client, zipped({"small.nii.gz": tmp_path / "small.nii.gz"}))
    assert r.status == 400 and (await r.json())["error"] == "no_matching_series"

    assert stored_files(app) == before
    assert app[CATALOG].segmentations_of(study_id) == []
    for secret in SYNTHETIC_PATIENT.values():
        assert secret not in body["detail"]

"""The synthetic CT head phantom (sample_data/phantom.py): a real, exact, deterministic DICOM series."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import PYDICOM_ROOT_UID, CTImageStorage, ExplicitVRLittleEndian

REPO = Path(__file__).resolve().parents[2]


def _load_phantom():
    spec = importlib.util.spec_from_file_location("sample_data_phantom", REPO / "sample_data" / "phantom.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


phantom = _load_phantom()

# 2.5 mm pixels over the 240 mm field, 5 mm slices over 200 mm: small, but the head is whole.
SMALL = phantom.PhantomParameters(shape=(40, 96, 96), seed=3)
TILTED = phantom.PhantomParameters(shape=(24, 64, 64), gantry_tilt=-18.5, slice_spacing=7.5, seed=3)


def read_series(folder: Path) -> list[pydicom.Dataset]:
    """Every slice file in ``folder``, sorted by ImagePositionPatient along the stack normal."""
    datasets = [pydicom.dcmread(f) for f in sorted(folder.iterdir()) if f.name != phantom.MANIFEST]
    return sorted(datasets, key=lambda ds: float(np.dot(ds.ImagePositionPatient, normal(ds))))


def normal(ds: pydicom.Dataset) -> np.ndarray:
    iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    return np.cross(iop[:3], iop[3:])


def hounsfield(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def voxel_centres(ds: pydicom.Dataset) -> np.ndarray:
    """LPS mm of every pixel of one slice, (rows, columns, 3), by the DICOM Image Plane equation."""
    iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    drow, dcol = (float(v) for v in ds.PixelSpacing)
    j, i = np.mgrid[0 : ds.Rows, 0 : ds.Columns]
    ipp = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
    return ipp + (i * dcol)[..., None] * iop[:3] + (j * drow)[..., None] * iop[3:]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, list[pydicom.Dataset]]:
    folder = tmp_path_factory.mktemp("phantom") / "series"
    phantom.write_phantom(folder, SMALL)
    return folder, read_series(folder)


@pytest.fixture(scope="module")
def tilted(tmp_path_factory) -> tuple[Path, list[pydicom.Dataset]]:
    folder = tmp_path_factory.mktemp("phantom") / "tilted"
    phantom.write_phantom(folder, TILTED)
    return folder, read_series(folder)


def test_series_is_ct_image_storage_in_explicit_little_endian(small):
    folder, slices = small
    assert len(slices) == SMALL.shape[0]
    assert len(list(folder.iterdir())) == SMALL.shape[0] + 1  # and the manifest
    for ds in slices:
        assert ds.preamble is not None and ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == CTImageStorage == ds.file_meta.MediaStorageSOPClassUID
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.pixel_array.shape == SMALL.shape[1:] and ds.pixel_array.dtype == np.int16
    assert len({ds.SOPInstanceUID for ds in slices}) == len(slices)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({ds[keyword].value for ds in slices}) == 1, keyword


# Type 1 and 2 elements of the CT Image IOD's modules (PS3.3 A.3), plus what a CT viewer needs.
REQUIRED = {
    "Patient": ["PatientName", "PatientID", "PatientBirthDate", "PatientSex"],
    "General Study": [
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "StudyID",
        "AccessionNumber",
    ],
    "General Series": ["Modality", "SeriesInstanceUID", "SeriesNumber", "PatientPosition"],
    "Frame of Reference": ["FrameOfReferenceUID", "PositionReferenceIndicator"],
    "General Equipment": ["Manufacturer"],
    "General Image": ["InstanceNumber"],
    "Image Plane": ["PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness"],
    "Image Pixel": [
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "PixelData",
    ],
    "CT Image": ["ImageType", "RescaleIntercept", "RescaleSlope", "KVP", "AcquisitionNumber"],
    "SOP Common": ["SOPClassUID", "SOPInstanceUID"],
}


@pytest.mark.parametrize("module", sorted(REQUIRED))
def test_headers_hold_the_ct_image_modules(small, module):
    ds = small[1][0]
    missing = [k for k in REQUIRED[module] if k not in ds]
    assert not missing, f"{module} lacks {missing}"


def test_ct_image_values(small):
    ds = small[1][0]
    assert ds.Modality == "CT" and list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert (ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType) == (-1024, 1, "HU")
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 16, 15, 1)
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.SamplesPerPixel == 1
    assert ds.PatientPosition == "HFS" and float(ds.KVP) > 0


def test_the_patient_is_fictitious(small):
    for ds in small[1]:
        assert str(ds.PatientName) == "PHANTOM^HEAD"
        assert ds.PatientID == phantom.PATIENT["PatientID"]
        assert ds.PatientBirthDate == "19700101" and ds.PatientSex == "O"
        assert "not a person" in ds.PatientComments
        assert ds.SOPInstanceUID.startswith(PYDICOM_ROOT_UID)


def test_axial_geometry_is_exact_and_evenly_spaced(small):
    _, slices = small
    p = SMALL.resolved()
    for ds in slices:
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.PixelSpacing] == list(p.pixel_spacing) == [2.5, 2.5]
        assert float(ds.SliceThickness) == p.slice_thickness == 5.0
    positions = np.array([ds.ImagePositionPatient for ds in slices], dtype=np.float64)
    np.testing.assert_allclose(np.diff(positions[:, 2]), 5.0, atol=1e-5)
    np.testing.assert_allclose(positions[:, :2], positions[:1, :2].repeat(len(slices), 0))
    centre = positions.mean(axis=0) + np.array([(96 - 1) / 2 * 2.5, (96 - 1) / 2 * 2.5, 0])
    np.testing.assert_allclose(centre, 0.0, atol=1e-5)  # the field is centred on the head
    assert [float(ds.SliceLocation) for ds in slices] == pytest.approx(positions[:, 2].tolist())


def test_neither_file_names_nor_instance_numbers_give_the_slice_order(small):
    folder, slices = small
    by_name = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.glob("IM*"))]
    z = [float(ds.ImagePositionPatient[2]) for ds in by_name]
    assert z != sorted(z) and z != sorted(z, reverse=True)
    instances = [int(ds.InstanceNumber) for ds in slices]  # in position order
    assert instances == sorted(instances, reverse=True) and len(set(instances)) == len(instances)


def test_tilted_series_is_a_sheared_stack(tilted):
    _, slices = tilted
    tilt = np.radians(-18.5)
    iop = np.asarray(slices[0].ImageOrientationPatient, dtype=np.float64)
    np.testing.assert_allclose(iop, [1, 0, 0, 0, np.cos(tilt), np.sin(tilt)], atol=1e-6)
    assert float(slices[0].GantryDetectorTilt) == -18.5
    positions = np.array([ds.ImagePositionPatient for ds in slices], dtype=np.float64)
    along_normal = positions @ normal(slices[0])
    np.testing.assert_allclose(np.diff(along_normal), 7.5, atol=1e-5)  # spacing along the normal
    np.testing.assert_allclose(np.diff(positions[:, 2]), 7.5 / np.cos(tilt), atol=1e-5)  # table steps
    np.testing.assert_allclose(np.diff(positions[:, :2], axis=0), 0.0, atol=1e-5)


@pytest.mark.parametrize("which", ["small", "tilted"])
def test_voxels_are_the_analytic_phantom_plus_noise(which, request):
    """Each pixel, placed by its header's geometry, holds the phantom's HU at that point plus the noise."""
    _, slices = request.getfixturevalue(which)
    params = SMALL if which == "small" else TILTED
    residuals = []
    for ds in slices[::3]:
        residuals.append(
            hounsfield(ds)
            - phantom.hu_at(voxel_centres(ds).reshape(-1, 3), params).reshape(ds.Rows, ds.Columns)
        )
    r = np.concatenate([x.ravel() for x in residuals])
    assert abs(r.mean()) < 0.5
    assert r.std() == pytest.approx(params.noise_hu, rel=0.05)
    assert np.abs(r).max() < 6 * params.noise_hu  # Gaussian, and nothing misplaced


@pytest.mark.parametrize("name", sorted(phantom.LANDMARKS))
def test_landmarks_hold_their_tissue(name):
    """At fine resolution, the noiseless phantom is exactly each tissue's HU inside it (skull tables too)."""
    point, expected = phantom.LANDMARKS[name]
    fine = phantom.PhantomParameters(shape=(300, 512, 512), pixel_spacing=(0.45, 0.45), slice_spacing=0.6)
    assert phantom.hu_at(np.array([point]), fine)[0] == pytest.approx(expected, abs=1.0)


THICK_TISSUES = ["air", "white matter", "vitreous", "maxillary sinus", "vertebral body", "orbital fat"]


@pytest.mark.parametrize("name", THICK_TISSUES)
def test_written_series_has_each_tissue_where_the_anatomy_puts_it(small, name):
    """Sampled from the files alone (3x3x3 voxels around a landmark): HU within noise of the tissue's."""
    _, slices = small
    point, expected = phantom.LANDMARKS[name]
    positions = np.array([ds.ImagePositionPatient for ds in slices], dtype=np.float64)
    k = int(np.argmin(np.abs(positions[:, 2] - point[2])))
    drow, dcol = (float(v) for v in slices[k].PixelSpacing)
    i = round((point[0] - positions[k, 0]) / dcol)
    j = round((point[1] - positions[k, 1]) / drow)
    block = np.stack([hounsfield(ds)[j - 1 : j + 2, i - 1 : i + 2] for ds in slices[k - 1 : k + 2]])
    assert block.mean() == pytest.approx(expected, abs=20.0)


def test_every_ct_preset_finds_its_tissue(small):
    """Bone, skin, soft tissue and contrast vessels are all present, in plausible amounts."""
    volume = np.stack([hounsfield(ds) for ds in small[1]])
    voxel_ml = 2.5 * 2.5 * 5.0 / 1000
    bone = (volume > 300.5).sum() * voxel_ml
    head = (volume > -500.5).sum() * voxel_ml
    assert 200 < bone < 1500 and 3000 < head < 8000  # an adult head: ~4 l above the neck, skull ~0.5 l
    fine = phantom.PhantomParameters(shape=(300, 512, 512), pixel_spacing=(0.45, 0.45), slice_spacing=0.6)
    carotid = phantom.LANDMARKS["carotid artery"][0]
    assert 150.5 < phantom.hu_at(np.array([carotid]), fine)[0] < 300.5  # vessels preset, not bone
    assert -20.5 < phantom.LANDMARKS["white matter"][1] < 150.5


def test_same_seed_same_bytes_other_seed_other_series(tmp_path, small):
    folder, _ = small
    again = phantom.write_phantom(tmp_path / "again", SMALL)
    assert again.written
    for f in folder.iterdir():
        assert (tmp_path / "again" / f.name).read_bytes() == f.read_bytes(), f.name
    other = phantom.write_phantom(tmp_path / "other", phantom.PhantomParameters(shape=(40, 96, 96), seed=4))
    a = read_series(folder)[20]
    b = read_series(other.folder)[20]
    assert a.SeriesInstanceUID != b.SeriesInstanceUID and a.SOPInstanceUID != b.SOPInstanceUID
    assert not np.array_equal(a.pixel_array, b.pixel_array)
    assert float(a.ImagePositionPatient[2]) == float(b.ImagePositionPatient[2])


def test_second_run_does_nothing_and_changed_parameters_replace_the_series(tmp_path):
    params = phantom.PhantomParameters(shape=(8, 32, 32))
    first = phantom.write_phantom(tmp_path, params)
    stamps = {f.name: f.stat().st_mtime_ns for f in tmp_path.iterdir()}
    second = phantom.write_phantom(tmp_path, params)
    assert first.written and not second.written
    assert sorted(second.files) == sorted(first.files)
    assert {f.name: f.stat().st_mtime_ns for f in tmp_path.iterdir()} == stamps

    (tmp_path / "notes.txt").write_text("not the phantom's")
    smaller = phantom.write_phantom(tmp_path, phantom.PhantomParameters(shape=(5, 32, 32)))
    assert smaller.written
    names = {f.name for f in tmp_path.iterdir()}
    assert names == {f.name for f in smaller.files} | {phantom.MANIFEST, "notes.txt"}
    assert len(read_series_files(tmp_path)) == 5


def read_series_files(folder: Path) -> list[Path]:
    return [f for f in folder.iterdir() if f.name.startswith("IM")]


def test_an_incomplete_series_is_written_again(tmp_path):
    params = phantom.PhantomParameters(shape=(6, 32, 32))
    series = phantom.write_phantom(tmp_path, params)
    series.files[2].unlink()
    assert phantom.existing_phantom(tmp_path, params) is None
    assert phantom.write_phantom(tmp_path, params).written
    assert series.files[2].exists()
    manifest = json.loads((tmp_path / phantom.MANIFEST).read_text())
    assert manifest["complete"] and manifest["parameters"] == params.as_json()
    assert not [f for f in tmp_path.iterdir() if ".tmp" in f.name]


def test_command_line(tmp_path, capsys):
    argv = [str(tmp_path), "--shape", "4", "24", "32", "--spacing", "8", "7.5", "--slice-spacing", "9"]
    assert phantom.main(argv) == 0
    assert "wrote 4 CT slices" in capsys.readouterr().out
    assert phantom.main(argv) == 0
    assert "already had 4 CT slices" in capsys.readouterr().out
    ds = read_series(tmp_path)[0]
    assert (ds.Rows, ds.Columns) == (24, 32)
    assert [float(v) for v in ds.PixelSpacing] == [8.0, 7.5] and float(ds.SliceThickness) == 9.0

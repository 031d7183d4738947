"""Ingest: inputs -> candidate files -> instances -> series, on real media exports and quirk files."""

from __future__ import annotations

import gzip
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

from reconstruction.assembly import assemble_volume
from reconstruction.errors import InconsistentSeriesError, InputError, NoVolumeError, PixelDataError
from reconstruction.instance import Instance, read_instance, read_instances
from reconstruction.pixels import decode_rescaled
from reconstruction.series import (
    Scan,
    Slice,
    find_series,
    group_series,
    pick_series,
    series_from_slices,
    series_preference,
)
from reconstruction.sources import FileRef, Skipped, ZipLimits, expand_inputs

PHILIPS = "ct-head-phantom-philips"
DICOMDIRTESTS = "pydicom-quirks/dicomdirtests"
PHILIPS_VOLUMES = {("STD BRAIN 5MM", 28), ("STEREOTAXIS", 54)}
SINGLE = "^single-slice series$"
SECONDARY_CAPTURE = "^secondary capture$"


def reasons(scan: Scan, pattern: str) -> list[Skipped]:
    return [s for s in scan.skipped if re.search(pattern, s.reason)]


def by_description(scan: Scan) -> dict[str, object]:
    return {s.description: s for s in scan.series}


# -- the Philips media export ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def philips(dicom_dir: Path) -> Path:
    return dicom_dir / PHILIPS


@pytest.fixture(scope="module")
def philips_scan(philips: Path) -> Scan:
    return find_series([philips])


def test_philips_folder_finds_exactly_the_two_volumes(philips_scan: Scan):
    found = {(s.description, s.slice_count, s.rows, s.columns) for s in philips_scan.series}
    assert found == {("STD BRAIN 5MM", 28, 512, 512), ("STEREOTAXIS", 54, 512, 512)}
    for series in philips_scan.series:
        assert series.modality == "CT"
        assert series.instance_count == series.slice_count
        assert series.uid == series.series_instance_uid  # not split


def test_philips_folder_skips_scouts_and_directory_records_with_reasons(philips_scan: Scan):
    scouts = reasons(philips_scan, r"localizer")
    assert sorted(Path(s.path).parts[-2] for s in scouts) == ["S1000", "S1000"]
    directories = reasons(philips_scan, r"^directory record$")
    names = sorted(Path(s.path).name for s in directories)
    assert names == ["DICOMDIR"] * 2 + ["DIRFILE"] * 6
    assert [Path(s.path).name for s in reasons(philips_scan, "not a DICOM file")] == ["LICENSE"]
    assert len(philips_scan.skipped) == 2 + 8 + 1


def test_philips_dicomdir_alone_finds_the_same_volumes_and_reports_the_missing_files(philips: Path):
    scan = find_series([philips / "DICOMDIR"])
    assert {(s.description, s.slice_count) for s in scan.series} == PHILIPS_VOLUMES
    assert [s.reason for s in reasons(scan, "missing")] == ["349 files referenced by DICOMDIR are missing"]
    assert len(reasons(scan, "localizer")) == 2
    assert not reasons(scan, "directory record")


def test_philips_nested_dirfiles_are_followed(philips: Path):
    """DICOM/DICOMDIR points at study DIRFILEs, which point at series DIRFILEs, which point at the images."""
    scan = find_series([philips / "DICOM" / "DICOMDIR"])
    assert {(s.description, s.slice_count) for s in scan.series} == PHILIPS_VOLUMES
    # S21570: S2020, S2030, S4010; S21610: S3010, S4010 (their DIRFILEs were left out of the export)
    assert [s.reason for s in reasons(scan, "missing")] == ["5 files referenced by DICOMDIR are missing"]


def test_a_philips_dirfile_given_alone_is_followed(philips: Path):
    """Its references are relative to DICOM/, two levels up: the file-set root is found from them."""
    scan = find_series([philips / "DICOM" / "S21570" / "S2010" / "DIRFILE"])
    assert [(s.description, s.slice_count) for s in scan.series] == [("STD BRAIN 5MM", 28)]
    assert scan.skipped == []


def test_folder_and_its_dicomdir_together_read_each_file_once(philips: Path):
    sources = expand_inputs([philips, philips / "DICOMDIR"])
    real = [str(f.path.resolve()) for f in sources.files]
    assert len(real) == len(set(real))
    scan = find_series([philips, philips / "DICOMDIR"])
    assert sorted(s.slice_count for s in scan.series) == [28, 54]
    assert not reasons(scan, "duplicate")
    # The DICOMDIR was followed, so it is not listed as a skipped directory record.
    assert [Path(s.path).name for s in reasons(scan, "^directory record$")] == ["DICOMDIR"] + ["DIRFILE"] * 6


def test_slices_sort_by_position_although_file_names_sort_wrongly(philips_scan: Scan):
    for series in philips_scan.series:
        distances = np.array([s.frame.position for s in series.slices]) @ series.normal
        assert np.all(np.diff(distances) > 0)
        by_name = sorted(series.slices, key=lambda s: Path(s.path).name)
        name_distances = np.array([s.frame.position for s in by_name]) @ series.normal
        assert not np.all(np.diff(name_distances) > 0), "the test needs names that sort wrongly"


def test_pick_series_prefers_most_slices_among_ct(philips_scan: Scan):
    assert pick_series(philips_scan).description == "STEREOTAXIS"
    regular = by_description(philips_scan)["STD BRAIN 5MM"]
    assert pick_series(philips_scan, regular.uid) is regular


def test_pick_series_unknown_uid_lists_the_available_ones(philips_scan: Scan):
    with pytest.raises(NoVolumeError) as error:
        pick_series(philips_scan, "1.2.3.4")
    for series in philips_scan.series:
        assert series.uid in error.value.problem


def test_reading_progress_counts_every_file(philips: Path):
    calls = []
    find_series([philips / "DICOM" / "S21570"], progress=lambda *a: calls.append(a))
    files = sum(1 for p in (philips / "DICOM" / "S21570").rglob("*") if p.is_file())
    assert calls[0] == ("reading", 0, files)
    assert calls[-1] == ("reading", files, files)
    assert [c[1] for c in calls] == list(range(files + 1))


# -- dicomdirtests: 3 patients, CR/CT/MR, split and error cases ----------------------------------------------
def test_dicomdirtests_folder(dicom_dir: Path):
    scan = find_series([dicom_dir / DICOMDIRTESTS])
    assert {(s.description, s.slice_count) for s in scan.series} == {
        ("Routine Brain", 4),
        ("SmartScore - Gated 0.5 sec", 5),
    }
    assert pick_series(scan).description == "SmartScore - Gated 0.5 sec"
    ct2n = [s for s in scan.skipped if s.path.endswith("CT2N")]
    assert [s.reason for s in ct2n] == ["localizer (scout) (2 files)"]
    assert len(reasons(scan, r"^projection image \(CR\)")) == 3
    assert reasons(scan, r"^projection image \(MR\) \(7 files\)")  # MR700: 7 projections, 7 orientations
    # MR2 holds three series; two of them hold three orientations each: split into single slices.
    mr2 = [s for s in scan.skipped if "/MR2" in s.path]
    assert sorted(s.reason for s in mr2) == ["single-slice series"] + ["single-slice series (3 files)"] * 2


@pytest.mark.parametrize(
    "name",
    ["DICOMDIR", "DICOMDIR-bigEnd", "DICOMDIR-implicit", "DICOMDIR-nooffset", "DICOMDIR-nopatient",
     "DICOMDIR-reordered"],
)
def test_dicomdir_variants_find_the_same_series(dicom_dir: Path, name: str):
    scan = find_series([dicom_dir / DICOMDIRTESTS / name])
    assert sorted(s.slice_count for s in scan.series) == [4, 5]
    assert not reasons(scan, "missing")


def test_empty_dicomdir_has_no_volume(dicom_dir: Path):
    scan = find_series([dicom_dir / DICOMDIRTESTS / "DICOMDIR-empty.dcm"])
    assert scan.series == []
    assert [s.reason for s in scan.skipped] == ["DICOMDIR-empty.dcm references no files"]
    with pytest.raises(NoVolumeError, match="no 3D series"):
        pick_series(scan)


def _instances(folder: Path) -> list[Instance]:
    instances, skipped = read_instances([FileRef(p) for p in sorted(folder.iterdir())])
    assert not skipped
    return instances


def test_ct2n_inconsistent_orientations_cannot_be_one_volume(dicom_dir: Path):
    """CT2N's two slices have different IOPs: they cannot share a stack; forced into one, assembly refuses."""
    instances = _instances(dicom_dir / DICOMDIRTESTS / "98892001" / "CT2N")
    orientations = {i.frames[0].orientation for i in instances}
    assert len(orientations) == 2
    forced = series_from_slices("forced", [Slice(i, i.frames[0]) for i in instances])
    with pytest.raises(InconsistentSeriesError, match="mixed orientations"):
        assemble_volume(forced)


def test_mr2_mixed_orientations_split_or_refuse(dicom_dir: Path):
    instances = _instances(dicom_dir / DICOMDIRTESTS / "98892003" / "MR2")
    series, skipped = group_series(instances)
    assert series == []
    split = ["single-slice series (3 files)"] * 2
    assert sorted(s.reason for s in skipped) == ["single-slice series", *split]
    forced = series_from_slices("forced", [Slice(i, i.frames[0]) for i in instances])
    with pytest.raises(InconsistentSeriesError):
        assemble_volume(forced)


# -- splitting and ids, on synthetic series ------------------------------------------------------------------
def test_a_series_with_two_orientations_splits_into_numbered_parts(write_series, tmp_path: Path):
    axial = [(0, 0, z) for z in (0.0, 1.0, 2.0)]
    coronal = [(0, y, 0) for y in (0.0, 1.0, 2.0, 3.0)]
    write_series(axial, folder="s", series_uid="1.2.826.0.1.3680043.8.498.1", names=["a0", "a1", "a2"])
    write_series(
        coronal, folder="s", series_uid="1.2.826.0.1.3680043.8.498.1", orientation=(1, 0, 0, 0, 0, -1),
        names=["c0", "c1", "c2", "c3"],
    )
    scan = find_series([tmp_path / "s"])
    assert sorted((s.uid, s.slice_count) for s in scan.series) == [
        ("1.2.826.0.1.3680043.8.498.1.1", 4),  # sorted by orientation: coronal (1,0,0,0,0,-1) first
        ("1.2.826.0.1.3680043.8.498.1.2", 3),
    ]
    assert pick_series(scan, "1.2.826.0.1.3680043.8.498.1.2").slice_count == 3
    with pytest.raises(NoVolumeError, match=r"498\.1\.1, .*498\.1\.2"):
        pick_series(scan, "1.2.826.0.1.3680043.8.498.1")


def test_a_split_series_with_one_volume_part_is_found_by_its_base_uid(write_series, tmp_path: Path):
    uid = "1.2.826.0.1.3680043.8.498.4"
    write_series([(0, 0, z) for z in (0.0, 1.0, 2.0)], folder="s", series_uid=uid, names=["a0", "a1", "a2"])
    write_series([(0, 5, 0)], folder="s", series_uid=uid, orientation=(1, 0, 0, 0, 0, -1), names=["c0"])
    scan = find_series([tmp_path / "s"])
    assert [s.uid for s in scan.series] == [f"{uid}.2"]  # part 1, the coronal slice, is a single slice
    assert [(Path(s.path).name, s.reason) for s in scan.skipped] == [("c0", "single-slice series")]
    assert pick_series(scan, uid).uid == f"{uid}.2"


def test_image_types_split_only_where_positions_repeat(write_series, tmp_path: Path):
    uid = "1.2.826.0.1.3680043.8.498.2"
    positions = [(0, 0, z) for z in (0.0, 1.0, 2.0)]
    write_series(positions, folder="s", series_uid=uid, names=["o0", "o1", "o2"])
    write_series(positions, folder="s", series_uid=uid, image_type=("DERIVED", "SECONDARY", "MPR"),
                 names=["d0", "d1", "d2"])
    scan = find_series([tmp_path / "s"])
    assert sorted((s.uid, s.slices[0].frame.frame_type[0]) for s in scan.series) == [
        (f"{uid}.1", "DERIVED"),
        (f"{uid}.2", "ORIGINAL"),
    ]
    # Different image types at different positions stay one series.
    write_series([(0, 0, 3.0)], folder="t", series_uid="1.2.826.0.1.3680043.8.498.3", names=["x"])
    write_series([(0, 0, 4.0)], folder="t", series_uid="1.2.826.0.1.3680043.8.498.3", names=["y"],
                 image_type=("DERIVED", "PRIMARY", "AXIAL"))
    assert [s.slice_count for s in find_series([tmp_path / "t"]).series] == [2]


def test_slices_with_an_invalid_orientation_are_skipped(write_series, tmp_path: Path):
    write_series([(0, 0, z) for z in range(3)], orientation=(1, 0, 0, 1, 0, 0))
    scan = find_series([tmp_path / "series"])
    assert scan.series == []
    assert [s.reason for s in scan.skipped] == [
        "invalid ImageOrientationPatient (not two orthogonal unit vectors) (3 files)"
    ]


def test_pick_prefers_ct_over_a_longer_mr(write_series, tmp_path: Path):
    write_series([(0, 0, z) for z in range(3)], folder="in/ct")
    write_series([(0, 0, z) for z in range(6)], folder="in/mr", modality="MR")
    scan = find_series([tmp_path / "in"])
    assert sorted(s.modality for s in scan.series) == ["CT", "MR"]
    assert pick_series(scan).modality == "CT"


def test_series_preference_ranks_ct_then_slices_then_slice_spacing_then_pixel_area():
    ranked = [
        ("MR", 400, 0.5, (0.3, 0.3)),
        ("CT", 100, 1.0, (0.5, 0.5)),
        ("CT", 200, 1.0, (0.5, 0.5)),
        ("CT", 200, 0.6, (0.9, 0.9)),
        ("CT", 200, 0.6, (0.4, 0.5)),
    ]
    keys = [series_preference(*r) for r in ranked]
    assert keys == sorted(keys)
    assert series_preference("ct", 1, 1.0, (1.0, 1.0)) == series_preference("CT", 1, 1.0, (1.0, 1.0))


# -- inputs: files of any kind, zips ------------------------------------------------------------------------
def test_missing_input_is_an_input_error(tmp_path: Path):
    with pytest.raises(InputError, match="no such file"):
        find_series([tmp_path / "absent"])


def test_non_dicom_files_are_skipped_with_reasons(dicom_dir: Path, tmp_path: Path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("LICENSE", "createAllTransferSyntaxes.sh.txt"):
        shutil.copy(dicom_dir / "ct-slice-transfer-syntaxes" / name, folder / name)
    shutil.copy(dicom_dir / "pydicom-quirks" / "zipMR.gz", folder / "zipMR.gz")
    (folder / "empty").write_bytes(b"")
    scan = find_series([folder])
    assert scan.series == []
    assert {Path(s.path).name: s.reason for s in scan.skipped} == {
        "LICENSE": "not a DICOM file",
        "createAllTransferSyntaxes.sh.txt": "not a DICOM file",
        "empty": "not a DICOM file",
        "zipMR.gz": "gzip-compressed file, not DICOM (gunzip it first)",
    }


def test_files_without_extension_or_file_meta_are_read(dicom_dir: Path, tmp_path: Path):
    """CT1_J2KR has no extension; a file re-written without preamble and File Meta is read with force."""
    source = dicom_dir / "pydicom-quirks" / "CT_small.dcm"
    meta_length = pydicom.dcmread(source, stop_before_pixels=True).file_meta.FileMetaInformationGroupLength
    no_meta = tmp_path / "no_meta_at_all"
    no_meta.write_bytes(source.read_bytes()[128 + 4 + 12 + meta_length :])  # the dataset alone
    assert no_meta.read_bytes()[:4] == b"\x08\x00\x05\x00"  # (0008,0005), no preamble, no File Meta
    instance = read_instance(FileRef(no_meta))
    assert isinstance(instance, Instance)
    assert np.array_equal(decode_rescaled(instance), decode_rescaled(read_instance(FileRef(source))))
    extensionless = read_instance(FileRef(dicom_dir / "ct-slice-transfer-syntaxes" / "CT1_J2KR"))
    assert isinstance(extensionless, Instance) and extensionless.rows == 512


def _zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_zip_input_is_read_member_by_member(dicom_dir: Path, tmp_path: Path):
    folder = dicom_dir / DICOMDIRTESTS / "98892001" / "CT5N"
    members = {f"study/CT5N/{p.name}": p.read_bytes() for p in sorted(folder.iterdir())}
    members["study/README.txt"] = b"not an image"
    archive = _zip(tmp_path / "upload.zip", members)
    scan = find_series([archive])
    [series] = scan.series
    assert series.slice_count == 5
    assert all(s.path.startswith(f"{archive}!study/CT5N/") for s in series.slices)
    assert [(s.path, s.reason) for s in scan.skipped] == [(f"{archive}!study/README.txt", "not a DICOM file")]
    from_zip = assemble_volume(series)
    from_folder = assemble_volume(find_series([folder]).series[0])
    assert np.array_equal(from_zip.voxels, from_folder.voxels)
    assert from_zip.pixel_hash == from_folder.pixel_hash


@pytest.mark.parametrize("name", ["../escape.dcm", "/etc/absolute.dcm", "a/../../b.dcm", "C:/windows.dcm"])
def test_zip_slip_member_is_refused(tmp_path: Path, name: str):
    archive = _zip(tmp_path / "slip.zip", {"fine.dcm": b"x", name: b"y"})
    with pytest.raises(InputError, match="zip-slip"):
        find_series([archive])


def test_zip_bomb_is_refused_by_ratio(tmp_path: Path):
    archive = _zip(tmp_path / "bomb.zip", {"zeros.dcm": bytes(24 * 1024 * 1024)})
    assert archive.stat().st_size < 100_000
    with pytest.raises(InputError, match="zip bomb"):
        find_series([archive])


def test_zip_bomb_is_refused_by_total_size(tmp_path: Path):
    archive = _zip(tmp_path / "big.zip", {f"m{i}.dcm": bytes(1000) for i in range(10)}, zipfile.ZIP_STORED)
    with pytest.raises(InputError, match="exceeds the limit"):
        find_series([archive], zip_limits=ZipLimits(max_bytes=5000))
    with pytest.raises(InputError, match="exceeds the limit"):
        find_series([archive], zip_limits={"max_bytes": 5000, "max_ratio": 50})
    assert len(expand_inputs([archive]).files) == 10  # fine with the default limits


def test_a_broken_zip_is_an_input_error(tmp_path: Path):
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(InputError, match="not a readable zip"):
        find_series([broken])


# -- every pydicom quirk file: read correctly, or a clear typed outcome --------------------------------------
@dataclass(frozen=True)
class Quirk:
    """The expected outcome for one quirk file.

    ``skipped``: the header reader skips it with this reason (regex). Otherwise it is an Instance and
    ``pixels`` says how its pixels decode: "pydicom" (equal to pydicom's own rescaled pixel_array),
    a file name (equal to that file's decode), or an error class with ``error`` (regex on the problem).
    ``series``: what find_series makes of the file alone: a slice count, or a skip reason (regex).
    """

    skipped: str = ""
    pixels: object = None
    error: str = ""
    series: object = None


QUIRKS = {
    "CT_small.dcm": Quirk(pixels="pydicom", series=SINGLE),
    "ExplVR_BigEnd.dcm": Quirk(pixels=PixelDataError, error=r"color images .* \(RGB", series="color image"),
    "ExplVR_BigEndNoMeta.dcm": Quirk(skipped=r"^no pixel data \(RT Ion Plan Storage\)$"),
    "ExplVR_LitEndNoMeta.dcm": Quirk(skipped=r"^no pixel data \(RT Ion Plan Storage\)$"),
    "J2K_pixelrep_mismatch.dcm": Quirk(pixels="pydicom", series=SINGLE),
    "JPEG-lossy.dcm": Quirk(  # a corrupt stream, refused by every decoder
        pixels=PixelDataError, error=r"cannot decode JPEG Extended .*\(1\.2\.840\.10008\.1\.2\.4\.51\)",
        series=SECONDARY_CAPTURE,
    ),
    "JPEG2000.dcm": Quirk(pixels="pydicom", series=SECONDARY_CAPTURE),  # NM stored as Secondary Capture
    "JPGExtended.dcm": Quirk(pixels="pydicom", series=SECONDARY_CAPTURE),
    "LICENSE": Quirk(skipped="^not a DICOM file$"),
    "MR_small.dcm": Quirk(pixels="pydicom", series=SINGLE),
    "MR_small_RLE.dcm": Quirk(pixels="MR_small.dcm", series=SINGLE),
    "MR_small_bigendian.dcm": Quirk(pixels="MR_small.dcm", series=SINGLE),
    "MR_small_expb.dcm": Quirk(pixels="MR_small.dcm", series=SINGLE),
    "MR_small_implicit.dcm": Quirk(pixels="MR_small.dcm", series=SINGLE),
    "MR_small_jp2klossless.dcm": Quirk(pixels="MR_small.dcm", series=SINGLE),
    "MR_small_jpeg_ls_lossless.dcm": Quirk(pixels="MR_small.dcm", series=SINGLE),
    "MR_small_padded.dcm": Quirk(pixels="MR_small.dcm", series=SINGLE),
    "MR_truncated.dcm": Quirk(pixels=PixelDataError, error=r"truncated: 8130 of 8192 bytes",
                              series=SINGLE),
    "README.txt": Quirk(skipped="^not a DICOM file$"),
    "SC_rgb_jpeg_dcmtk.dcm": Quirk(pixels=PixelDataError, error="color", series=SECONDARY_CAPTURE),
    "SC_rgb_jpeg_gdcm.dcm": Quirk(pixels=PixelDataError, error="color", series=SECONDARY_CAPTURE),
    "badVR.dcm": Quirk(skipped=r"^invalid NumberOfFrames value '1A'$"),
    "image_dfl.dcm": Quirk(pixels="pydicom", series=SECONDARY_CAPTURE),
    "liver_1frame.dcm": Quirk(skipped=r"^segmentation \(SEG\), not an image$"),
    "meta_missing_tsyntax.dcm": Quirk(skipped="^DICOM file without SOP Class UID or image attributes$"),
    # CT_small's dataset preceded by one stray byte: a forced read yields no plausible dataset.
    "no_meta.dcm": Quirk(skipped="^not a DICOM file$"),
    "no_meta_group_length.dcm": Quirk(skipped=r"^no pixel data \(RT Image Storage\)$"),
    "rtdose.dcm": Quirk(pixels="pydicom", series=15),
    "rtdose_expb.dcm": Quirk(pixels="rtdose.dcm", series=15),
    "rtdose_rle.dcm": Quirk(pixels="rtdose.dcm", series=15),
    "zipMR.gz": Quirk(skipped=r"^gzip-compressed file, not DICOM"),
}


def test_the_quirk_table_covers_every_file(dicom_dir: Path):
    files = {p.name for p in (dicom_dir / "pydicom-quirks").iterdir() if p.is_file()}
    assert files == set(QUIRKS)


def _pydicom_rescaled(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    values = ds.pixel_array.astype(np.float64)
    slope = float(ds.get("DoseGridScaling") or ds.get("RescaleSlope") or 1.0)
    values = values * slope + float(ds.get("RescaleIntercept") or 0.0)
    return values.reshape(-1, ds.Rows, ds.Columns)


@pytest.mark.parametrize("name", sorted(QUIRKS))
def test_quirk_file(dicom_dir: Path, name: str):
    quirk = QUIRKS[name]
    path = dicom_dir / "pydicom-quirks" / name
    result = read_instance(FileRef(path))
    if quirk.skipped:
        assert isinstance(result, Skipped), result
        assert re.search(quirk.skipped, result.reason), result.reason
        return
    assert isinstance(result, Instance), result
    if isinstance(quirk.pixels, type):
        with pytest.raises(quirk.pixels) as error:
            decode_rescaled(result)
        assert re.search(quirk.error, error.value.problem), error.value.problem
        assert str(path) in str(error.value)
    else:
        values = decode_rescaled(result)
        if quirk.pixels == "pydicom":
            expected = _pydicom_rescaled(path)
        else:
            expected = decode_rescaled(read_instance(FileRef(path.parent / quirk.pixels)))
        assert values.shape == expected.shape
        assert np.allclose(values, expected, rtol=1e-6, atol=0.5 if values.dtype == np.int16 else 1e-6)
    scan = find_series([path])
    if isinstance(quirk.series, int):
        assert [s.slice_count for s in scan.series] == [quirk.series]
    else:
        assert scan.series == []
        assert [s.path for s in scan.skipped] == [str(path)]
        assert re.search(quirk.series, scan.skipped[0].reason), scan.skipped[0].reason


def test_quirk_folder_as_a_whole(dicom_dir: Path):
    """The whole folder at once: duplicates by SOP Instance UID are read once, and what is left assembles."""
    scan = find_series([dicom_dir / "pydicom-quirks"])
    assert sorted(s.slice_count for s in scan.series) == [4, 5, 15]
    assert len(reasons(scan, "duplicate SOP Instance UID")) == 8 + 2 + 1  # MR_small, rtdose, JPEG copies
    for series in scan.series:
        volume = assemble_volume(series, allow_gaps=True)
        assert volume.shape[0] == series.slice_count


def test_gzip_detection_does_not_depend_on_the_name(tmp_path: Path):
    disguised = tmp_path / "I100"
    disguised.write_bytes(gzip.compress(b"DICM" * 100))
    skipped = read_instance(FileRef(disguised))
    assert isinstance(skipped, Skipped) and "gzip" in skipped.reason

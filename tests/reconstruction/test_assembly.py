"""Volume assembly: exact geometry on the Philips phantom (regular and gantry-tilted), and every rule on
synthetic series (duplicates, gaps, mixed orientations, uneven spacing, the pixel hash, privacy)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import SYNTHETIC_PATIENT

from reconstruction.assembly import assemble_volume, pixel_hash
from reconstruction.errors import InconsistentSeriesError, NonContiguousSeriesError
from reconstruction.series import Series, Slice, find_series, pick_series, series_from_slices
from reconstruction.volume import Volume

PHILIPS_STUDIES = "ct-head-phantom-philips/DICOM"


@pytest.fixture(scope="module")
def philips_volumes(dicom_dir: Path) -> dict[str, tuple[Series, Volume]]:
    studies = dicom_dir / PHILIPS_STUDIES
    scan = find_series([studies / "S21570" / "S2010", studies / "S21610" / "S2010"])
    return {s.description: (s, assemble_volume(s)) for s in scan.series}


def stack_angle_degrees(volume: Volume) -> float:
    """The angle between the slice normal and the line through the first and last slice origins."""
    stack = volume.positions[-1] - volume.positions[0]
    cosine = abs(stack @ volume.normal) / np.linalg.norm(stack)
    return float(np.degrees(np.arccos(min(1.0, cosine))))


def test_regular_series_geometry(philips_volumes):
    series, volume = philips_volumes["STD BRAIN 5MM"]
    assert volume.shape == (28, 512, 512) and volume.voxels.dtype == np.int16
    assert volume.spacing_mm == pytest.approx((5.0, 0.451171875, 0.451171875))
    assert volume.slice_spacings == pytest.approx(np.full(27, 5.0), abs=1e-6)
    assert volume.positions[0].tolist() == pytest.approx([-115.5, -1.85, 696.21])
    assert volume.positions[-1].tolist() == pytest.approx([-115.5, -1.85, 831.21])
    assert volume.row_direction.tolist() == [1.0, 0.0, 0.0]
    assert volume.column_direction.tolist() == [0.0, 1.0, 0.0]
    assert stack_angle_degrees(volume) == pytest.approx(0.0, abs=1e-6)
    assert volume.slice_thickness == 5.0
    assert (volume.modality, volume.units, volume.description) == ("CT", "HU", "STD BRAIN 5MM")
    assert volume.series_uid == series.uid
    assert volume.warnings == ()
    # Air around the phantom is -1024 HU (stored 0), and the phantom's plastic is well above water.
    assert volume.voxels.min() == -1024 and 500 < volume.voxels.max() < 1000


def test_tilted_series_keeps_every_true_position(philips_volumes):
    _, volume = philips_volumes["STEREOTAXIS"]
    assert volume.shape == (54, 512, 512)
    assert volume.positions[0].tolist() == pytest.approx([-123.5, -15.64097, 742.345191756896])
    assert volume.positions[-1].tolist() == pytest.approx([-123.5, -15.64097, 874.845191756896])
    assert np.diff(volume.positions[:, 2]) == pytest.approx(np.full(53, 2.5))  # z step 2.5 mm
    assert np.ptp(volume.positions[:, :2], axis=0).tolist() == [0.0, 0.0]  # a sheared stack, not resampled
    assert volume.column_direction.tolist() == pytest.approx([0.0, 0.9483237, -0.3173047])
    assert volume.slice_spacings == pytest.approx(np.full(53, 2.3708), abs=1e-4)  # evenly along the normal
    assert stack_angle_degrees(volume) == pytest.approx(18.5, abs=0.05)
    assert volume.warnings == ()


def test_positions_ascend_along_the_normal(philips_volumes):
    for _, volume in philips_volumes.values():
        assert np.all(volume.slice_spacings > 0)


def test_index_to_lps_maps_the_corner_voxels_of_the_tilted_stack(philips_volumes):
    _, volume = philips_volumes["STEREOTAXIS"]
    last_row = volume.index_to_lps(np.array([[53.0, 511.0, 0.0]]))[0]
    expected = volume.positions[53] + 511 * 0.482421875 * np.array([0.0, 0.9483237, -0.3173047])
    assert last_row == pytest.approx(expected)


def test_pixel_hash_is_a_deterministic_cache_key(philips_volumes):
    series, volume = philips_volumes["STD BRAIN 5MM"]
    assert re.fullmatch(r"[0-9a-f]{64}", volume.pixel_hash)
    again = assemble_volume(series)
    assert again.pixel_hash == volume.pixel_hash
    directions = (volume.row_direction, volume.column_direction)
    assert pixel_hash(volume.voxels, volume.positions, *directions, volume.pixel_spacing) == volume.pixel_hash
    shifted = volume.positions + np.array([0, 0, 0.001])
    assert pixel_hash(volume.voxels, shifted, *directions, volume.pixel_spacing) != volume.pixel_hash
    changed = volume.voxels.copy()
    changed[13, 200, 200] += 1
    assert pixel_hash(changed, volume.positions, *directions, volume.pixel_spacing) != volume.pixel_hash
    assert pixel_hash(volume.voxels, volume.positions, *directions, (0.45, 0.45)) != volume.pixel_hash
    assert philips_volumes["STEREOTAXIS"][1].pixel_hash != volume.pixel_hash


def test_decoding_progress_counts_every_slice(philips_volumes):
    series, _ = philips_volumes["STD BRAIN 5MM"]
    calls = []
    assemble_volume(series, progress=lambda *a: calls.append(a))
    assert calls[0] == ("decoding", 0, 28) and calls[-1] == ("decoding", 28, 28)
    assert all(stage == "decoding" and total == 28 for stage, _, total in calls)
    assert [done for _, done, _ in calls] == sorted(done for _, done, _ in calls)


# -- synthetic series: the rules one by one ------------------------------------------------------------------
def only_series(folder: Path) -> Series:
    return pick_series(find_series([folder]))


def test_slice_order_ignores_file_names_and_instance_numbers(write_series, tmp_path: Path):
    zs = [3.0, 0.0, 4.0, 1.0, 2.0]
    write_series([(0, 0, z) for z in zs], names=["a", "b", "c", "d", "e"])
    volume = assemble_volume(only_series(tmp_path / "series"))
    assert volume.positions[:, 2].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    # Each slice's pixels moved with it: slice k was written as the k-th position with values 100 (k + 1) + i.
    order = np.argsort(zs)
    assert volume.voxels[:, 0, 0].tolist() == [100 * (int(k) + 1) - 1024 for k in order]


def test_duplicate_position_with_identical_pixels_is_dropped_with_a_warning(write_series, tmp_path: Path):
    pixels = np.stack([np.full((8, 8), v, dtype=np.uint16) for v in (10, 20, 20, 30)])
    write_series([(0, 0, 0), (0, 0, 1), (0, 0, 1), (0, 0, 2)], pixels)
    volume = assemble_volume(only_series(tmp_path / "series"))
    assert volume.shape == (3, 8, 8)
    assert volume.positions[:, 2].tolist() == [0.0, 1.0, 2.0]
    assert volume.voxels[:, 0, 0].tolist() == [10 - 1024, 20 - 1024, 30 - 1024]
    assert volume.warnings == (
        "1 duplicate slices (same position, identical pixels) dropped, at 1.00 mm along the stack",
    )


def test_duplicate_position_with_different_pixels_is_an_error(write_series, tmp_path: Path):
    pixels = np.stack([np.full((8, 8), v, dtype=np.uint16) for v in (10, 20, 21, 30)])
    write_series([(0, 0, 0), (0, 0, 1), (0, 0, 1), (0, 0, 2)], pixels)
    with pytest.raises(InconsistentSeriesError, match=r"two different images at the same position \(1.00 mm"):
        assemble_volume(only_series(tmp_path / "series"))


def test_a_gap_is_refused_unless_allowed(write_series, tmp_path: Path):
    zs = [0.0, 1.0, 2.0, 5.0, 6.0]  # thickness 1 mm: 3 mm > 1.5 mm is a gap
    write_series([(0, 0, z) for z in zs], thickness=1.0)
    series = only_series(tmp_path / "series")
    with pytest.raises(NonContiguousSeriesError, match=r"gap of 3.00 mm between slices 2 and 3") as error:
        assemble_volume(series)
    assert "1.5 × slice thickness 1.00 mm" in error.value.problem
    volume = assemble_volume(series, allow_gaps=True)
    assert volume.positions[:, 2].tolist() == zs  # the gap is kept, not filled
    assert volume.warnings == ("not contiguous: gap of 3.00 mm between slices 2 and 3 (more than 1.5 × slice "
                               "thickness 1.00 mm)",)


def test_without_thickness_a_gap_is_measured_against_the_median_spacing(write_series, tmp_path: Path):
    write_series([(0, 0, z) for z in (0.0, 2.0, 4.0, 6.0, 9.5)], thickness=None, folder="gap")
    with pytest.raises(NonContiguousSeriesError, match=r"median spacing 2\.00 mm"):
        assemble_volume(only_series(tmp_path / "gap"))
    write_series([(0, 0, z) for z in (0.0, 2.0, 4.0, 6.0, 8.9)], thickness=None, folder="fine")
    volume = assemble_volume(only_series(tmp_path / "fine"))  # 2.9 mm < 1.5 × 2 mm
    assert volume.warnings == ("uneven slice spacing, 2.000 to 2.900 mm (kept as is, not resampled)",)


def test_uneven_spacing_is_kept_exactly(write_series, tmp_path: Path):
    zs = [0.0, 1.0, 2.25, 3.0, 4.4]
    write_series([(0, 0, z) for z in zs], thickness=1.0)
    volume = assemble_volume(only_series(tmp_path / "series"))
    assert volume.positions[:, 2].tolist() == zs
    assert volume.slice_spacings == pytest.approx([1.0, 1.25, 0.75, 1.4])
    assert "uneven slice spacing" in volume.warnings[0]
    # index_to_lps interpolates between the real neighbours.
    assert volume.index_to_lps(np.array([[1.5, 0.0, 0.0]]))[0].tolist() == pytest.approx([0, 0, 1.625])


def test_mixed_orientations_in_one_series_are_an_error(write_series, tmp_path: Path):
    axial = only_series(_folder(write_series, "axial", [(0, 0, 0), (0, 0, 1)], (1, 0, 0, 0, 1, 0)))
    oblique = only_series(_folder(write_series, "oblique", [(0, 0, 2), (0, 0, 3)], (1, 0, 0, 0, 0.99, 0.141)))
    mixed = series_from_slices("mixed", [*axial.slices, *oblique.slices])
    with pytest.raises(InconsistentSeriesError, match="mixed orientations"):
        assemble_volume(mixed)


def _folder(write_series, name: str, positions, orientation) -> Path:
    return write_series(positions, folder=name, orientation=orientation)[0].parent


def test_mixed_matrix_sizes_in_one_series_are_an_error(write_series, tmp_path: Path):
    small = only_series(write_series([(0, 0, 0), (0, 0, 1)], folder="small")[0].parent)
    big_pixels = np.zeros((2, 16, 16), dtype=np.uint16)
    big = only_series(write_series([(0, 0, 2), (0, 0, 3)], big_pixels, folder="big")[0].parent)
    with pytest.raises(InconsistentSeriesError, match="mixed matrix sizes"):
        assemble_volume(series_from_slices("mixed", [*small.slices, *big.slices]))


def test_same_distance_but_another_in_plane_origin_is_an_error(write_series, tmp_path: Path):
    base = only_series(write_series([(0, 0, 0), (0, 0, 1)], folder="a")[0].parent)
    shifted = only_series(write_series([(5, 0, 1), (5, 0, 2)], folder="b")[0].parent)
    with pytest.raises(InconsistentSeriesError, match="different in-plane origins"):
        assemble_volume(series_from_slices("mixed", [*base.slices, *shifted.slices]))


def test_dicomdirtests_ct2_has_a_real_gap(dicom_dir: Path):
    """CT2: slices at z -99.48, 103.02, 104.27, 105.52 with 1.25 mm thickness."""
    [series] = [s for s in find_series([dicom_dir / "pydicom-quirks/dicomdirtests/77654033/CT2"]).series]
    with pytest.raises(NonContiguousSeriesError, match=r"gap of 202.50 mm between slices 0 and 1"):
        assemble_volume(series)
    volume = assemble_volume(series, allow_gaps=True)
    assert volume.positions[:, 2].tolist() == pytest.approx([-99.480003, 103.019997, 104.269997, 105.519997])
    assert len(volume.warnings) == 1 and "gap of 202.50 mm" in volume.warnings[0]


def test_no_patient_data_or_uids_in_description_or_warnings(write_series, tmp_path: Path):
    pixels = np.stack([np.full((8, 8), v, dtype=np.uint16) for v in (1, 2, 2, 3, 4)])
    positions = [(0, 0, 0), (0, 0, 1), (0, 0, 1), (0, 0, 2), (0, 0, 9)]
    paths = write_series(positions, pixels, description="HEAD CT")
    series = only_series(paths[0].parent)
    volume = assemble_volume(series, allow_gaps=True)
    assert len(volume.warnings) == 2  # the duplicate and the gap
    text = " ".join([volume.description, *volume.warnings])
    secrets = [*SYNTHETIC_PATIENT.values(), series.series_instance_uid, series.study_instance_uid]
    secrets += [s.instance.sop_instance_uid for s in series.slices] + [str(tmp_path)]
    for secret in secrets:
        assert secret not in text
    assert volume.description == "HEAD CT"
    assert volume.series_uid == series.uid  # the real UID stays with the volume, server-side


def test_slices_of_one_multi_frame_file_share_one_decode(dicom_dir: Path):
    path = dicom_dir / "ct-slice-transfer-syntaxes" / "CT0012.fragmented_no_bot_jpeg_baseline.51.dcm"
    [series] = find_series([path]).series
    assert series.instance_count == 1 and series.slice_count == 2
    calls = []
    volume = assemble_volume(series, progress=lambda *a: calls.append(a))
    assert calls == [("decoding", 0, 2), ("decoding", 2, 2)]
    assert volume.shape == (2, 512, 512)


def test_a_slice_from_two_series_keeps_its_own_rescale(write_series, tmp_path: Path):
    """Rescale is per slice: two stacks with different intercepts give one consistent HU volume."""
    first = only_series(write_series([(0, 0, 0), (0, 0, 1)], folder="a")[0].parent)
    second = only_series(write_series([(0, 0, 2), (0, 0, 3)], folder="b")[0].parent)
    slices = [*first.slices, *[Slice(s.instance, _with_intercept(s, -1000.0)) for s in second.slices]]
    volume = assemble_volume(series_from_slices("both", slices))
    assert volume.voxels[:, 0, 0].tolist() == [100 - 1024, 200 - 1024, 100 - 1000, 200 - 1000]


def _with_intercept(s: Slice, intercept: float):
    from dataclasses import replace

    return replace(s.frame, rescale_intercept=intercept)

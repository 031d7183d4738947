"""Reslicing and windows on synthetic volumes whose every value is known: a linear field is reproduced exactly
on any oblique plane through a sheared (gantry-tilted), unevenly spaced stack; acquired slices come back as
they are; edges, air and bad planes; the window's grey levels and the MR presets from percentiles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reconstruction.reslice import CT_AIR, Plane, PlaneError, air_value, reslice
from reconstruction.volume import Volume
from reconstruction.windows import CT_WINDOWS, to_grey, windows_for

GRADIENT = np.array([3.0, -2.0, 5.0])  # HU per mm along L, P, S


def tilted_uneven_volume(modality: str = "CT") -> Volume:
    """20 slices of 24 x 32, 0.6 mm pixels, tilted 20 degrees about L, spaced 1 to 2.5 mm apart along a
    table that moves in S only (so the stack is sheared), each voxel holding a linear function of its LPS
    centre."""
    tilt = math.radians(20)
    row = np.array([1.0, 0.0, 0.0])
    column = np.array([0.0, math.cos(tilt), -math.sin(tilt)])
    steps = np.r_[0.0, np.tile([1.0, 2.5, 1.5], 7)[:19]]
    positions = np.array([[-10.0, -8.0, 30.0 + z] for z in np.cumsum(steps)])
    j, i = np.mgrid[0:24, 0:32]
    centres = (positions[:, None, None, :] + (i * 0.6)[None, ..., None] * row + (j * 0.6)[None, ..., None] * column)
    voxels = (centres @ GRADIENT + 100.0).astype(np.float32)
    return Volume(voxels, positions, row, column, (0.6, 0.6), modality=modality)


def linear(points: np.ndarray) -> np.ndarray:
    return points @ GRADIENT + 100.0


def inside_points(volume: Volume, points: np.ndarray) -> np.ndarray:
    """Whether each point lies between the first and last slice and within every slice's pixel centres."""
    along = points @ volume.normal
    distances = volume.positions @ volume.normal
    inside = (along >= distances[0]) & (along <= distances[-1])
    for position in volume.positions:
        offset = points - position
        i, j = offset @ volume.row_direction / 0.6, offset @ volume.column_direction / 0.6
        inside &= (i >= 0) & (i <= 31) & (j >= 0) & (j <= 23)
    return inside


@pytest.mark.parametrize("u, v", [
    ((1, 0, 0), (0, 1, 0)),  # the patient's axial plane, oblique to the tilted slices
    ((0, 1, 0), (0, 0, -1)),  # sagittal
    ((0.6, 0.8, 0.0), (0.0, 0.0, -1.0)),
    ((0.48, 0.6, 0.64), (0.8, -0.6, 0.0)),  # oblique every way
])
def test_a_linear_field_is_reproduced_on_any_plane(u, v):
    volume = tilted_uneven_volume()
    v = np.asarray(v, float) - np.dot(u, v) * np.asarray(u, float)
    plane = Plane.checked((0.0, 0.0, 48.0), u, v / np.linalg.norm(v), 30.0, 24.0, 64)
    image = reslice(volume, plane)
    centres = plane.pixel_centres().reshape(-1, 3)
    inside = inside_points(volume, centres)
    assert inside.sum() > 100
    assert image.ravel()[inside] == pytest.approx(linear(centres[inside]), abs=1e-3)


def test_an_acquired_slice_comes_back_exactly():
    volume = tilted_uneven_volume()
    for k in (0, 7, 19):
        origin = volume.positions[k] + 15.5 * 0.6 * volume.row_direction + 11.5 * 0.6 * volume.column_direction
        plane = Plane.checked(origin, volume.row_direction, volume.column_direction, 32 * 0.6, 24 * 0.6, 32)
        assert plane.rows == 24
        assert np.array_equal(reslice(volume, plane), volume.voxels[k])


def test_pixels_follow_the_documented_centres():
    plane = Plane.checked((1.0, 2.0, 3.0), (0, 1, 0), (0, 0, -1), 40.0, 10.0, 16)
    assert plane.rows == 4
    centres = plane.pixel_centres()
    # Pixel (r, c) at origin + ((c + 0.5) - px/2)(w/px) u + ((r + 0.5) - rows/2)(h/rows) v.
    assert centres[0, 0].tolist() == pytest.approx([1.0, 2.0 - 7.5 * 2.5, 3.0 + 1.5 * 2.5])
    assert centres[3, 15].tolist() == pytest.approx([1.0, 2.0 + 7.5 * 2.5, 3.0 - 1.5 * 2.5])
    assert plane.projections(np.array([0.0, 1.0, 0.0])) == pytest.approx(centres[..., 1])


def test_outside_is_air_and_the_half_voxel_past_an_edge_is_the_edge():
    volume = tilted_uneven_volume()
    k = 0
    edge = volume.positions[k] + 15.5 * 0.6 * volume.row_direction + 11.5 * 0.6 * volume.column_direction
    for shift, expected in ((-0.3, volume.voxels[0]), (-0.7, None)):
        origin = edge + shift * volume.normal  # the first slice's spacing is 1 mm: 0.3 mm is within half of it
        plane = Plane.checked(origin, volume.row_direction, volume.column_direction, 32 * 0.6, 24 * 0.6, 32)
        image = reslice(volume, plane)
        if expected is None:
            assert (image == CT_AIR).all()
        else:
            assert np.array_equal(image, expected)
    # In plane: a plane wider than the slice by two pixels on each side keeps the edge pixels, then air.
    origin = volume.positions[5] + 15.5 * 0.6 * volume.row_direction + 11.5 * 0.6 * volume.column_direction
    plane = Plane.checked(origin, volume.row_direction, volume.column_direction, 36 * 0.6, 24 * 0.6, 36)
    image = reslice(volume, plane)
    assert (image[:, :2] == CT_AIR).all() and (image[:, -2:] == CT_AIR).all()
    assert np.array_equal(image[:, 2:-2], volume.voxels[5])


def test_air_is_ct_air_or_the_images_floor():
    assert air_value(tilted_uneven_volume("CT")) == -1024.0
    mr = tilted_uneven_volume("MR")
    assert air_value(mr) == min(0.0, float(mr.voxels.min()))
    plane = Plane.checked((5000.0, 0.0, 0.0), (1, 0, 0), (0, 1, 0), 10.0, 10.0, 16)
    assert (reslice(mr, plane) == air_value(mr)).all()


@pytest.mark.parametrize("change, words", [
    ({"u": (1.01, 0, 0)}, "u must be a unit vector"),
    ({"v": (1, 0, 0)}, "parallel"),
    ({"v": (0.01, 1, 0)}, "orthogonal"),
    ({"origin": (0, math.inf, 0)}, "origin must be three finite numbers"),
    ({"u": (1, 0)}, "u must be three finite numbers"),
    ({"width_mm": 0.0}, "width_mm must be a positive"),
    ({"height_mm": math.nan}, "height_mm must be a positive"),
    ({"columns": 8}, "px must be from 16 to 2048"),
    ({"width_mm": 1.0, "height_mm": 200.0, "columns": 16}, "rows"),
])
def test_degenerate_planes_are_refused(change, words):
    args = {"origin": (0, 0, 0), "u": (1, 0, 0), "v": (0, 1, 0), "width_mm": 10.0, "height_mm": 10.0,
            "columns": 16, **change}
    with pytest.raises(PlaneError, match=words):
        Plane.checked(**args)


def test_nearly_orthonormal_directions_are_made_exact():
    plane = Plane.checked((0, 0, 0), (1.0004, 0, 0), (0.0005, 0.9999, 0), 10.0, 10.0, 16)
    assert np.linalg.norm(plane.u) == pytest.approx(1.0, abs=1e-12)
    assert np.linalg.norm(plane.v) == pytest.approx(1.0, abs=1e-12)
    assert np.dot(plane.u, plane.v) == pytest.approx(0.0, abs=1e-12)


def test_the_window_maps_its_ends_to_black_and_white():
    values = np.array([-1000.0, -500.0, 400.0, 1300.0, 3000.0], dtype=np.float32)
    assert to_grey(values, 1800.0, 400.0).tolist() == [0, 0, 128, 255, 255]
    assert to_grey(np.array([39.0, 40.0, 41.0], dtype=np.float32), 2.0, 40.0).tolist() == [0, 128, 255]


def test_ct_has_the_radiologists_windows_and_mr_its_own():
    assert windows_for(tilted_uneven_volume("CT")) == CT_WINDOWS
    assert [(w.name, w.width, w.level) for w in CT_WINDOWS] == [
        ("bone", 1800.0, 400.0), ("brain", 80.0, 40.0), ("soft tissue", 400.0, 40.0), ("lung", 1500.0, -600.0)]
    rng = np.random.default_rng(0)
    body = rng.normal(600.0, 50.0, size=(20, 40, 40))  # a body of ~600 in a background of ~20
    voxels = np.where(np.hypot(*np.mgrid[-20:20, -20:20]) < 12, body, rng.normal(20.0, 5.0, size=body.shape))
    mr = Volume(voxels.astype(np.float32), np.array([[0.0, 0.0, float(k)] for k in range(20)]),
                np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), (1.0, 1.0), modality="MR", units="")
    tissue, full = windows_for(mr)
    assert tissue.name == "tissue" and tissue.level == pytest.approx(600.0, abs=10)
    assert tissue.width == pytest.approx(2 * 2.33 * 50.0, rel=0.1)  # the body's 1st to 99th percentile
    assert full.level - full.width / 2 < 30 and full.level + full.width / 2 > 700  # background to body

"""Surfaces of real scans: the MR skin is the head's outer surface, thick slices lose their terraces within half a
slice, and "largest structure only" leaves the skull without its head holder."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.sparse.csgraph import connected_components

from reconstruction.gltf import glb_bytes
from reconstruction.pipeline import build_meshes, load_volume
from reconstruction.presets import CT_PRESETS, MR_PRESETS
from reconstruction.refine import trilinear
from reconstruction.smoothing import edge_adjacency
from reconstruction.surface import extract_surface
from reconstruction.volume import Volume

MR_HEAD = "mr-head-t1-tcia-vs"
PHILIPS = "ct-head-phantom-philips/DICOM/S21570/S2010"  # "STD BRAIN 5MM": 5 mm slices
TILTED = "ct-head-phantom-philips/DICOM/S21610/S2010"  # "STEREOTAXIS": 2.37 mm along the normal, 18.5° tilt


@pytest.fixture(scope="module")
def volumes(dicom_dir: Path):
    cache: dict[str, Volume] = {}

    def volume(name: str) -> Volume:
        if name not in cache:
            cache[name] = load_volume([dicom_dir / name])[2]
        return cache[name]

    return volume


def components(vertices: np.ndarray, faces: np.ndarray) -> int:
    """Connected surfaces, joined by shared edges."""
    count, _ = connected_components(edge_adjacency(faces.astype(np.int64), len(vertices)), directed=False)
    return count


def crossings(vertices: np.ndarray, faces: np.ndarray, origin: np.ndarray, direction: np.ndarray) -> int:
    """How many triangles the ray from ``origin`` along ``direction`` passes through (Möller-Trumbore)."""
    v = vertices.astype(np.float64)
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    e1, e2 = b - a, c - a
    p = np.cross(direction, e2)
    det = np.einsum("ij,ij->i", e1, p)
    ok = np.abs(det) > 1e-12
    inverse = np.divide(1.0, det, out=np.zeros_like(det), where=ok)
    t_vec = origin - a
    u = np.einsum("ij,ij->i", t_vec, p) * inverse
    q = np.cross(t_vec, e1)
    w = (q @ direction) * inverse
    t = np.einsum("ij,ij->i", e2, q) * inverse
    return int(np.count_nonzero(ok & (u >= 0) & (w >= 0) & (u + w <= 1) & (t > 0)))


# -- the MR skin: the outer surface of the head ---------------------------------------------------------------
def test_the_mr_skin_is_one_closed_surface_crossed_once_from_inside_the_head(volumes):
    volume = volumes(MR_HEAD)
    mesh = extract_surface(volume, "skin")
    skin = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    assert skin.is_watertight and skin.is_winding_consistent and skin.volume > 2e6  # mm³: a head
    assert components(mesh.vertices, mesh.faces) == 1 and mesh.keep_largest == 1
    # Rays from the middle of the brain to the vertex, the back, the sides and up the forehead: each leaves the
    # head through the skin once. Before, the skin also wrapped the skull, the ventricles and the sulci.
    centre = volume.index_to_lps(np.array([[60.0, 256.0, 256.0]]))[0]
    for direction in ([0, 0, 1], [0, 1, 0.2], [1, 0, 0.5], [-1, 0, 0.5], [0, -1, 1], [0.5, 0.5, 1]):
        ray = np.asarray(direction, dtype=np.float64) / np.linalg.norm(direction)
        assert crossings(mesh.vertices, mesh.faces, centre, ray) == 1, direction


def image_at(volume: Volume, points: np.ndarray) -> np.ndarray:
    """The trilinear image value at LPS points of an axial stack."""
    heights = volume.positions @ volume.normal
    k = np.interp(points @ volume.normal, heights, np.arange(len(heights)))
    local = points - volume.index_to_lps(np.c_[k, np.zeros_like(k), np.zeros_like(k)])
    j = local @ volume.column_direction / volume.pixel_spacing[0]
    i = local @ volume.row_direction / volume.pixel_spacing[1]
    return trilinear(volume.voxels, np.c_[k, j, i])[0]


def test_the_skin_lies_on_the_image_level_except_where_it_seals_an_opening(volumes):
    volume = volumes(MR_HEAD)
    mesh = extract_surface(volume, "skin")
    misfit = np.abs(image_at(volume, mesh.vertices.astype(np.float64)) - mesh.threshold) / mesh.threshold
    # The rest seals the nostrils, the ear canals and the gaps behind the ears, where no level crosses.
    assert np.percentile(misfit, 90) < 0.01


def test_skin_is_opaque_on_mr_and_translucent_over_the_bone_on_ct():
    assert MR_PRESETS["skin"].alpha_mode == "OPAQUE"
    assert CT_PRESETS["skin"].alpha_mode == "BLEND"
    assert MR_PRESETS["skin"].outer and CT_PRESETS["skin"].outer and not CT_PRESETS["bone"].outer


# -- thick slices: terraces smoothed within half a slice ----------------------------------------------------------
def face_normal_roughness(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Mean angle (degrees) between the normals of faces that share an edge."""
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    return float(np.degrees(mesh.face_adjacency_angles).mean())


@pytest.mark.parametrize("name", [PHILIPS, TILTED])
def test_thick_slices_are_smoothed_by_default_within_half_a_slice_keeping_the_volume(volumes, name):
    volume = volumes(name)
    assert volume.spacing_mm[0] > 2.0
    # No decimation, so that both meshes have the same vertices, one for one.
    smoothed = extract_surface(volume, "skin", target_triangles=10**7)
    terraced = extract_surface(volume, "skin", target_triangles=10**7, slice_smoothing=False)
    assert smoothed.slice_smoothing and not terraced.slice_smoothing
    assert smoothed.faces.shape == terraced.faces.shape
    moved = np.linalg.norm(smoothed.vertices.astype(np.float64) - terraced.vertices, axis=1)
    half_a_slice = 0.5 * float(np.min(volume.slice_spacings))
    assert moved.max() <= half_a_slice + 1e-4  # float32 vertices
    assert np.median(moved) > 0.05  # it did smooth
    volumes_mm3 = [trimesh.Trimesh(m.vertices, m.faces, process=False).volume for m in (smoothed, terraced)]
    assert volumes_mm3[0] == pytest.approx(volumes_mm3[1], rel=0.02)
    assert face_normal_roughness(smoothed.vertices, smoothed.faces) < 0.8 * face_normal_roughness(
        terraced.vertices, terraced.faces
    )


def test_slice_smoothing_is_off_for_thin_slices_and_recorded_in_the_glb(volumes):
    mesh = extract_surface(volumes(MR_HEAD), "skin", target_triangles=20_000)
    assert not mesh.slice_smoothing  # 1.5 mm slices
    data = glb_bytes([mesh], volume=volumes(MR_HEAD))
    (length,) = struct.unpack_from("<I", data, 12)
    extras = json.loads(data[20 : 20 + length])["meshes"][0]["extras"]
    assert extras["slice_smoothing"] is False and extras["keep_largest"] == 1


# -- largest structure only -----------------------------------------------------------------------------------
def test_largest_only_leaves_the_skull_without_the_head_holder(volumes):
    volume = volumes(PHILIPS)
    [everything] = build_meshes(volume, ["bone"], target_triangles=100_000)
    [skull] = build_meshes(volume, ["bone"], target_triangles=100_000, largest_only=True)
    assert components(everything.vertices, everything.faces) > 1 and everything.keep_largest is None
    assert components(skull.vertices, skull.faces) == 1 and skull.keep_largest == 1
    assert trimesh.Trimesh(skull.vertices, skull.faces, process=False).is_watertight

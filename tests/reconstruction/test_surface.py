"""Surface extraction: analytic shapes sampled onto real-world stack geometries, meshed, and measured."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

from reconstruction import isosurface, surface
from reconstruction.decimate import compact, split_pinched_edges
from reconstruction.errors import SurfaceError
from reconstruction.isosurface import marching_cubes_slabs
from reconstruction.pipeline import build_meshes
from reconstruction.presets import CT_PRESETS, MR_PRESETS, Preset, level_for, preset_names_for
from reconstruction.refine import project_onto_isosurface
from reconstruction.smoothing import edge_adjacency, taubin
from reconstruction.surface import extract_surface, sampling_grid, scan_volume
from reconstruction.volume import Volume

LEVEL = 500.5
TEST_PRESET = Preset("test", "fixed", LEVEL, (1.0, 1.0, 1.0, 1.0), roughness=0.5)


def stack(shape, positions, row=(1.0, 0.0, 0.0), col=(0.0, 1.0, 0.0), pixel_spacing=(1.0, 1.0)) -> Volume:
    """An empty Volume with the given geometry (to map indices before the voxels exist)."""
    return Volume(
        voxels=np.zeros(shape, np.int16),
        positions=np.asarray(positions, dtype=np.float64),
        row_direction=np.asarray(row, dtype=np.float64),
        column_direction=np.asarray(col, dtype=np.float64),
        pixel_spacing=pixel_spacing,
    )


def voxel_centres(geometry: Volume) -> np.ndarray:
    """LPS of every voxel centre, (k, j, i, 3)."""
    index = np.stack(np.meshgrid(*(np.arange(s) for s in geometry.shape), indexing="ij"), axis=-1)
    return geometry.index_to_lps(index.reshape(-1, 3)).reshape((*geometry.shape, 3))


def with_voxels(geometry: Volume, signed_distance: np.ndarray, dtype=np.int16, ramp_mm: float = 1.5) -> Volume:
    """Voxels 1000 inside, 0 outside, a linear partial-volume ramp of 2 * ramp_mm across the surface (500 on
    it)."""
    values = 1000.0 * np.clip(0.5 - signed_distance / (2.0 * ramp_mm), 0.0, 1.0)
    voxels = np.round(values).astype(dtype) if np.issubdtype(dtype, np.integer) else values.astype(dtype)
    return Volume(
        voxels=voxels,
        positions=geometry.positions,
        row_direction=geometry.row_direction,
        column_direction=geometry.column_direction,
        pixel_spacing=geometry.pixel_spacing,
        modality="CT",
    )


def sphere_volume(geometry: Volume, centre, radius: float, dtype=np.int16) -> Volume:
    distance = np.linalg.norm(voxel_centres(geometry) - np.asarray(centre), axis=-1) - radius
    return with_voxels(geometry, distance, dtype)


def axial(shape, slice_mm: float, pixel_spacing) -> Volume:
    n = shape[0]
    positions = np.zeros((n, 3))
    positions[:, 2] = np.arange(n) * slice_mm
    return stack(shape, positions, pixel_spacing=pixel_spacing)


def as_trimesh(mesh) -> trimesh.Trimesh:
    return trimesh.Trimesh(mesh.vertices.astype(np.float64), mesh.faces.astype(np.int64), process=False)


def assert_closed_and_outward(mesh, centre) -> None:
    t = as_trimesh(mesh)
    assert t.is_watertight, "mesh has open edges"
    assert t.is_winding_consistent
    assert t.volume > 0, "faces wound inward"
    outward = (mesh.vertices - np.asarray(centre)) / np.linalg.norm(mesh.vertices - np.asarray(centre), axis=1)[:, None]
    np.testing.assert_allclose(np.linalg.norm(mesh.normals, axis=1), 1.0, atol=1e-5)
    assert np.einsum("ij,ij->i", mesh.normals, outward).min() > 0.5


# --- the sphere: size and shape after the whole pipeline ----------------------------------------------------

SPHERE_CENTRE = (24.0, 25.6, 27.5)
SPHERE_RADIUS = 20.0


@pytest.fixture(scope="module")
def sphere() -> Volume:
    # Anisotropic: 1.25 mm slices, 0.8 mm rows, 0.6 mm columns.
    return sphere_volume(axial((44, 64, 80), 1.25, (0.8, 0.6)), SPHERE_CENTRE, SPHERE_RADIUS)


@pytest.mark.parametrize("budget", [1_000, 5_000, 1_000_000])
def test_sphere_volume_and_area_within_one_percent(sphere, budget):
    mesh = extract_surface(sphere, TEST_PRESET, target_triangles=budget)
    t = as_trimesh(mesh)
    assert mesh.triangles <= budget
    assert t.volume == pytest.approx(4 / 3 * np.pi * SPHERE_RADIUS**3, rel=0.01)
    assert t.area == pytest.approx(4 * np.pi * SPHERE_RADIUS**2, rel=0.01)
    assert_closed_and_outward(mesh, SPHERE_CENTRE)
    assert mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.uint32
    assert mesh.normals.dtype == np.float32 and mesh.threshold == LEVEL


def test_taubin_smoothing_removes_noise_without_shrinking(sphere):
    mesh = extract_surface(sphere, TEST_PRESET, smooth=False, target_triangles=10**6)
    rng = np.random.default_rng(5)
    centre = np.asarray(SPHERE_CENTRE)
    noisy = mesh.vertices + rng.normal(0.0, 0.15, mesh.vertices.shape)
    adjacency = edge_adjacency(mesh.faces.astype(np.int64), len(noisy))
    smoothed = taubin(noisy, adjacency)
    laplacian = taubin(noisy, adjacency, mu=0.0)  # plain Laplacian smoothing, for contrast: it shrinks
    radius = {name: np.linalg.norm(v - centre, axis=1) for name, v in [("noisy", noisy), ("taubin", smoothed)]}
    assert radius["taubin"].std() < 0.5 * radius["noisy"].std()
    assert radius["taubin"].mean() == pytest.approx(SPHERE_RADIUS, abs=0.02)
    assert np.linalg.norm(laplacian - centre, axis=1).mean() < SPHERE_RADIUS - 0.05


def test_float_voxels_give_the_same_sphere(sphere):
    geometry = axial((44, 64, 80), 1.25, (0.8, 0.6))
    floats = sphere_volume(geometry, SPHERE_CENTRE, SPHERE_RADIUS, dtype=np.float32)
    mesh = extract_surface(floats, TEST_PRESET, target_triangles=5_000)
    assert as_trimesh(mesh).volume == pytest.approx(4 / 3 * np.pi * SPHERE_RADIUS**3, rel=0.01)
    assert_closed_and_outward(mesh, SPHERE_CENTRE)


def test_build_meshes_makes_each_preset_in_order_and_reports_progress(sphere):
    calls = []
    meshes = build_meshes(sphere, ["bone", "skin"], threshold=LEVEL, target_triangles=5_000,
                          progress=lambda *call: calls.append(call))
    first = next(meshes)
    assert first.preset == "bone" and [c for c in calls if c[0] == "meshing"] == [("meshing", 0, 2)]
    assert [m.preset for m in meshes] == ["skin"]
    assert [c for c in calls if c[0] == "meshing"] == [("meshing", 0, 2), ("meshing", 1, 2), ("meshing", 2, 2)]
    assert first.triangles <= 5_000 and first.threshold == LEVEL


# --- geometry: gantry tilt, uneven spacing, oblique and left-handed stacks ----------------------------------


def tilted_uneven_positions(n: int, row, col, tilt_deg: float, along_normal: float = 1.0) -> np.ndarray:
    """Slice positions spaced unevenly (0.6-1.8 mm) along the stack normal (or against it when along_normal is
    -1), each shifted along the column direction by tan(tilt) per mm: a gantry-tilted, sheared stack."""
    rng = np.random.default_rng(7)
    z = np.concatenate([[0.0], np.cumsum(rng.uniform(0.6, 1.8, n - 1))])
    normal = np.cross(row, col)
    offset = along_normal * z[:, None] * normal + (z * np.tan(np.radians(tilt_deg)))[:, None] * np.asarray(col)
    return offset + np.array([-30.0, -40.0, -15.0])


GEOMETRIES = {
    # row x column = +z, slices ascending along it: the usual axial stack.
    "tilted-uneven": dict(row=(1.0, 0.0, 0.0), col=(0.0, 1.0, 0.0), tilt=20.0, along=1.0),
    # row x column = -z: the slices run toward inferior, still sorted along the normal.
    "tilted-uneven-flipped-normal": dict(row=(0.0, 1.0, 0.0), col=(1.0, 0.0, 0.0), tilt=-15.0, along=1.0),
    # Slices run against the normal (ingest never sorts so): the index->LPS map changes handedness.
    "against-the-normal": dict(row=(1.0, 0.0, 0.0), col=(0.0, 1.0, 0.0), tilt=10.0, along=-1.0),
    # Oblique rows and columns, tilted.
    "oblique": dict(
        row=(np.cos(0.5), np.sin(0.5), 0.0),
        col=(-0.8 * np.sin(0.5), 0.8 * np.cos(0.5), 0.6),
        tilt=12.0,
        along=1.0,
    ),
}


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_vertices_land_on_the_lps_sphere_for_sheared_uneven_stacks(name):
    g = GEOMETRIES[name]
    positions = tilted_uneven_positions(40, g["row"], g["col"], g["tilt"], g["along"])
    geometry = stack((40, 56, 60), positions, row=g["row"], col=g["col"], pixel_spacing=(0.9, 0.7))
    centre, radius = voxel_centres(geometry)[20, 28, 30], 12.0
    mesh = extract_surface(sphere_volume(geometry, centre, radius), TEST_PRESET, smooth=False)

    # Marching cubes interpolates linearly along voxel edges and the ramp is linear in the distance to the
    # surface, so the only error is the sphere's sag across an edge: at most (longest edge)^2 / (8 radius).
    longest_edge = max(np.linalg.norm(np.diff(positions, axis=0), axis=1).max(), 0.9, 0.7)
    tolerance = longest_edge**2 / (8 * radius) + 0.005
    radial = np.linalg.norm(mesh.vertices - centre, axis=1)
    assert np.abs(radial - radius).max() < tolerance
    assert_closed_and_outward(mesh, centre)


def test_downsampled_vertices_sit_where_the_block_centres_are(sphere):
    # Block sums of 2 voxels sit at voxel index 2K + 0.5 (3 voxels: 3K + 1); mapping them to 2K (3K) would
    # move the surface by 0.6 mm along k (0.8 mm along j) and show up here as a radial error. (extract_surface
    # would hide it, by projecting the vertices onto the full-resolution surface.)
    grid, level = sampling_grid(sphere.voxels, scan_volume(sphere.voxels, LEVEL), (2, 3, 2), LEVEL)
    kji, _ = marching_cubes_slabs(grid, level)
    radial = np.linalg.norm(sphere.index_to_lps(grid.to_voxel_index(kji)) - np.asarray(SPHERE_CENTRE), axis=1)
    assert np.abs(radial - SPHERE_RADIUS).max() < 0.25


@pytest.mark.parametrize("name", ["tilted-uneven", "oblique"])
def test_projection_moves_points_onto_the_full_resolution_surface(name):
    g = GEOMETRIES[name]
    positions = tilted_uneven_positions(40, g["row"], g["col"], g["tilt"], g["along"])
    geometry = stack((40, 56, 60), positions, row=g["row"], col=g["col"], pixel_spacing=(0.9, 0.7))
    centre, radius = voxel_centres(geometry)[20, 28, 30], 12.0
    volume = sphere_volume(geometry, centre, radius)
    mesh = extract_surface(volume, TEST_PRESET, smooth=False, target_triangles=10**6)
    # Push every vertex up to 0.6 mm off the sphere, tangentially too, then project back (in index space).
    rng = np.random.default_rng(11)
    pushed = mesh.vertices + rng.uniform(-0.6, 0.6, mesh.vertices.shape)
    kji = lps_to_index(geometry, pushed)
    projected = geometry.index_to_lps(project_onto_isosurface(volume, kji, LEVEL, max_step_mm=3.0))
    before = np.abs(np.linalg.norm(pushed - centre, axis=1) - radius)
    after = np.abs(np.linalg.norm(projected - centre, axis=1) - radius)
    assert np.percentile(before, 50) > 0.2
    # Trilinear interpolation of the int16 ramp is exact to the sphere's sag across one voxel.
    assert after.max() < 0.05


def lps_to_index(geometry: Volume, points: np.ndarray) -> np.ndarray:
    """Inverse of index_to_lps by a few fixed-point steps on the per-slice affine map (test helper)."""
    kji = np.zeros_like(points)
    jacobian_ji = np.stack(
        [
            geometry.pixel_spacing[0] * geometry.column_direction,
            geometry.pixel_spacing[1] * geometry.row_direction,
        ],
        axis=1,
    )
    normal = geometry.normal
    heights = geometry.positions @ normal
    for _ in range(5):
        kji[:, 0] = np.interp(
            points @ normal
            - (geometry.index_to_lps(kji) - geometry.index_to_lps(np.c_[kji[:, 0], np.zeros((len(kji), 2))])) @ normal,
            heights,
            np.arange(len(heights)),
        )
        origin = geometry.index_to_lps(np.c_[kji[:, 0], np.zeros((len(kji), 2))])
        kji[:, 1:] = np.linalg.lstsq(jacobian_ji, (points - origin).T, rcond=None)[0].T
    return kji


# --- downsampling and slabs ---------------------------------------------------------------------------------


def skull_like(shape=(96, 128, 128), spacing=(1.0, 0.7, 0.7)) -> Volume:
    """A bumpy hollow shell 4-8 mm thick, a ball inside it, and a bar through the first and last slices."""
    geometry = axial(shape, spacing[0], spacing[1:])
    p = voxel_centres(geometry) - np.array([45.0, 45.0, 48.0])
    theta = np.arctan2(p[..., 1], p[..., 0])
    r = np.linalg.norm(p / np.array([1.0, 1.1, 1.2]), axis=-1) + 1.5 * np.sin(5 * theta) * np.cos(p[..., 2] / 9)
    shell = np.maximum(r - 36.0, 30.0 - r - 2.0 * np.sin(3 * theta))
    blob = np.linalg.norm(p, axis=-1) - 8.0
    bar = np.maximum(np.abs(p[..., 0] + 32) - 3.0, np.abs(p[..., 1] - 30) - 3.0)
    return with_voxels(geometry, np.minimum(np.minimum(shell, blob), bar))


def spy(monkeypatch, module, name: str) -> list:
    """Record what ``module.name`` returns while the test runs."""
    results, real = [], getattr(module, name)

    def recorded(*args, **kwargs):
        results.append(real(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(module, name, recorded)
    return results


def full_resolution_surface(volume: Volume, level: float) -> tuple[np.ndarray, np.ndarray]:
    padded = np.pad(volume.voxels.astype(np.float32), 1, constant_values=0)
    v, f, _, _ = marching_cubes(padded, level)
    index = np.clip(v - 1, 0, np.array(volume.shape) - 1)
    return volume.index_to_lps(index), f


def dense_points(vertices, faces, per_face: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a, b, c = (vertices[faces[:, n]] for n in range(3))
    r1, r2 = rng.random((2, len(faces), per_face))
    s = np.sqrt(r1)
    u, w = 1 - s, s * (1 - r2)
    points = a[:, None] * u[..., None] + b[:, None] * w[..., None] + c[:, None] * (1 - u - w)[..., None]
    return np.concatenate([vertices, points.reshape(-1, 3)])


@pytest.fixture(scope="module")
def skull() -> Volume:
    return skull_like()


def test_downsampled_slab_parallel_surface_is_closed_and_within_half_a_millimetre(skull, monkeypatch):
    full_v, full_f = full_resolution_surface(skull, LEVEL)
    budget = len(full_f) // 4
    monkeypatch.setattr(isosurface, "MIN_PARALLEL_SAMPLES", 0)
    monkeypatch.setattr(isosurface, "MAX_SLAB_SAMPLES", 20_000)  # many slabs: many welded planes
    factors, pools = spy(monkeypatch, surface, "block_factors"), spy(monkeypatch, isosurface, "_fork_pool")
    mesh = extract_surface(skull, TEST_PRESET, target_triangles=budget, workers=2)
    assert factors[0] != (1, 1, 1) and len(pools) == 1
    assert mesh.triangles <= budget
    t = as_trimesh(mesh)
    assert t.is_watertight and t.is_winding_consistent and t.volume > 0
    # Four closed surfaces: the shell's outside and inside, the ball, and the capped bar.
    assert len(t.split(only_watertight=True)) == 4

    ours = dense_points(mesh.vertices.astype(np.float64), mesh.faces.astype(np.int64))
    reference = dense_points(full_v, full_f)
    to_reference, _ = cKDTree(reference).query(ours)
    to_ours, _ = cKDTree(ours).query(reference)
    assert np.percentile(to_reference, 95) < 0.5
    assert np.percentile(to_ours, 95) < 0.5


def canonical_triangles(faces: np.ndarray) -> np.ndarray:
    """Faces rotated to start at their lowest index (winding kept), sorted."""
    t = np.take_along_axis(faces, (np.argmin(faces, axis=1)[:, None] + np.arange(3)) % 3, axis=1)
    return t[np.lexsort(t.T[::-1])]


def test_welded_slabs_equal_one_slab(skull, monkeypatch):
    grid, level = sampling_grid(skull.voxels, scan_volume(skull.voxels, LEVEL), (2, 2, 2), LEVEL)
    one_v, one_f = marching_cubes_slabs(grid, level)
    monkeypatch.setattr(isosurface, "MAX_SLAB_SAMPLES", 3_000)
    assert len(isosurface._slab_bounds(grid.shape[0], 1000)) > 10
    many_v, many_f = marching_cubes_slabs(grid, level)
    # The same vertices (one to one, up to float32 rounding of slab-local coordinates) and the same triangles.
    distance, same = cKDTree(one_v).query(many_v)
    assert distance.max() < 1e-4 and len(np.unique(same)) == len(many_v) == len(one_v)
    np.testing.assert_array_equal(canonical_triangles(same[many_f]), canonical_triangles(one_f))


@pytest.mark.parametrize("smooth, budget", [(False, 10**7), (True, 20_000)])
def test_surface_touching_the_volume_edge_is_capped_in_the_edge_slices(skull, smooth, budget):
    mesh = extract_surface(skull, TEST_PRESET, smooth=smooth, target_triangles=budget)
    assert as_trimesh(mesh).is_watertight
    # The bar leaves through the first and last slices: its caps lie in those slices' planes, and smoothing
    # does not round them off beyond the data.
    z = mesh.vertices[:, 2]
    # Quadric decimation may place a merged vertex a few micrometres off the plane.
    assert z.min() == pytest.approx(skull.positions[0, 2], abs=0.01)
    assert z.max() == pytest.approx(skull.positions[-1, 2], abs=0.01)


def test_keep_largest_keeps_the_biggest_surfaces(skull):
    everything = as_trimesh(extract_surface(skull, TEST_PRESET, keep_largest=None))
    largest = as_trimesh(extract_surface(skull, TEST_PRESET, keep_largest=1))
    parts = sorted(everything.split(only_watertight=False), key=lambda m: len(m.faces), reverse=True)
    assert len(largest.split(only_watertight=False)) == 1
    assert largest.area == pytest.approx(parts[0].area, rel=1e-6)


def test_integer_level_on_integer_data_makes_no_zero_area_triangles(skull):
    mesh = extract_surface(skull, TEST_PRESET, threshold=500.0, smooth=False, target_triangles=10**7)
    areas = as_trimesh(mesh).area_faces
    assert areas.min() > 1e-6
    assert mesh.threshold == 500.0


def test_tissue_thinner_than_a_block_is_meshed_at_full_resolution():
    # A one-voxel sheet at 1000 in 0: its 2x2x2 block sums average to 500, below the level, so the
    # downsampled grid has no surface at all.
    geometry = axial((40, 60, 60), 0.5, (0.5, 0.5))
    voxels = np.zeros(geometry.shape, np.int16)
    voxels[5:35, 5:55, 30] = 1000
    volume = Volume(voxels, geometry.positions, geometry.row_direction, geometry.column_direction, (0.5, 0.5))
    with pytest.MonkeyPatch.context() as patch:
        factors = spy(patch, surface, "block_factors")
        mesh = extract_surface(volume, TEST_PRESET, target_triangles=1_000)
    assert factors[0] != (1, 1, 1)
    assert 0 < mesh.triangles <= 1_000
    assert np.abs(mesh.vertices[:, 0] - 15.0).max() < 0.5


PINCHED = {
    # Two tetrahedra sharing the edge 0-1: four faces on one edge, as an edge collapse can leave them.
    "one edge": (
        [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, -1, 0], [0, 0, -1]],
        [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3], [0, 4, 1], [0, 1, 5], [0, 5, 4], [1, 4, 5]],
        8,
    ),
    # The same, in an order where the first pairing tried joins the wrong faces (it is tried again).
    "one edge, reordered": (
        [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, -1, 0], [0, 0, -1]],
        [[0, 4, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3], [0, 2, 1], [0, 1, 5], [0, 5, 4], [1, 4, 5]],
        8,
    ),
    # A tetrahedron and a bipyramid sharing all three edges of the triangle 0-1-2 (but not the triangle):
    # every pinched vertex has two pinched edges.
    "edge loop": (
        [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.3, 0.3, 1], [0.3, 0.3, -1], [0.3, 0.3, -2]],
        [[0, 2, 1], [0, 1, 3], [1, 2, 3], [2, 0, 3], [4, 1, 0], [4, 2, 1], [4, 0, 2], [5, 0, 1], [5, 1, 2], [5, 2, 0]],
        9,
    ),
}


@pytest.mark.parametrize("name", list(PINCHED))
def test_pinched_edges_are_split_into_closed_sheets(name):
    vertices, faces, expected_vertices = PINCHED[name]
    vertices, faces = np.array(vertices, dtype=np.float64), np.array(faces)
    assert not trimesh.Trimesh(vertices, faces, process=False).is_watertight
    split_v, split_f = split_pinched_edges(vertices, faces)
    t = trimesh.Trimesh(split_v, split_f, process=False)
    assert t.is_watertight and t.is_winding_consistent
    assert len(split_v) == expected_vertices and len(t.split(only_watertight=True)) == 2
    np.testing.assert_array_equal(split_v[split_f], vertices[faces])  # the same triangles in space


def test_fins_left_by_decimation_are_dropped():
    # A closed tetrahedron with a fin on its edge 0-1: two faces on the same three vertices, back to back.
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, -1, 0]], dtype=np.float64)
    tetrahedron = [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]
    faces = np.array([*tetrahedron, [0, 1, 4], [1, 0, 4]])
    kept_v, kept_f = compact(vertices, faces)
    t = trimesh.Trimesh(kept_v, kept_f, process=False)
    assert len(kept_f) == 4 and len(kept_v) == 4 and t.is_watertight and t.volume == pytest.approx(1 / 6)


# --- levels and errors --------------------------------------------------------------------------------------


def test_threshold_outside_the_data_range_is_a_surface_error(sphere):
    for level in (-5.0, 1000.5, 5000.0):
        with pytest.raises(SurfaceError, match="outside the data range"):
            extract_surface(sphere, TEST_PRESET, threshold=level)


def test_unknown_preset_is_a_surface_error(sphere):
    with pytest.raises(SurfaceError, match="unknown preset"):
        extract_surface(sphere, "liver")


def test_ct_presets_are_half_integer_hounsfield_levels():
    for preset in CT_PRESETS.values():
        assert preset.level is not None and preset.level % 1 == 0.5
        assert all(0.0 <= c <= 1.0 for c in preset.color)
    assert CT_PRESETS["bone"].level > CT_PRESETS["vessels"].level > CT_PRESETS["soft-tissue"].level
    assert CT_PRESETS["soft-tissue"].level > CT_PRESETS["skin"].level
    assert preset_names_for("CT") == ["bone", "skin"] and preset_names_for("MR") == ["skin"]


def test_mr_skin_level_is_otsu_between_background_and_body():
    geometry = axial((30, 40, 40), 2.0, (1.5, 1.5))
    body = sphere_volume(geometry, (30.0, 30.0, 29.0), 18.0)
    rng = np.random.default_rng(3)
    voxels = (body.voxels.astype(np.float64) * 0.6 + 40 + rng.normal(0, 10, body.shape)).clip(0).astype(np.uint16)
    mr = Volume(voxels, geometry.positions, geometry.row_direction, geometry.column_direction, (1.5, 1.5), "MR", "")
    level = level_for(MR_PRESETS["skin"], mr)
    assert 150 < level < 500 and level % 1 == 0.5
    mesh = extract_surface(mr, "skin", target_triangles=20_000)
    assert mesh.threshold == level
    assert as_trimesh(mesh).is_watertight

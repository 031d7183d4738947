"""Structure surfaces: one Mesh per StructureMask, in the same exact LPS geometry as the iso-surfaces.

A binary mask meshed as it is gives a staircase. Each structure goes through these steps, on its own crop:

1. Marching cubes at 0.5 on the crop padded with one empty voxel all round: a closed surface through the
   midpoints between the structure's voxels and their outside neighbours (capped half a voxel past its last
   slice, where that voxel ends).
2. The staircase is smoothed away (windowed sinc, in index space), and every vertex is then held within half a
   voxel (`HOLD_VOXELS`), along each axis, of where marching cubes put it: the surface stays with the boundary voxels.
3. Marching cubes cuts the corners of the staircase off, which shrinks small structures: a uniform offset along
   the normals, within the same half voxel, gives back the mask's voxel volume (the volume a radiologist
   measures: voxels times voxel size).
4. Decimation to the structure's share of the triangle budget: shares follow the surface area (counted on the
   mask's voxel faces), with a floor (`MIN_TRIANGLES`) so that small structures keep their shape.
5. Index -> LPS through ``Volume.index_to_lps`` (gantry tilt and uneven slice spacing exact), and normals.

Structures are meshed in parallel in forked processes, each reading the masks it inherits (never pickled).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from skimage.measure import marching_cubes

from .decimate import decimate
from .isosurface import fork_possible
from .mesh import Mesh
from .progress import Progress, no_progress
from .smoothing import edge_adjacency, windowed_sinc
from .structures import StructureMask, hex_color, linear_rgba
from .surface import DEFAULT_TARGET_TRIANGLES, available_cpus, vertex_normals, winding_is_outward
from .volume import Volume

PRESET = "structure"
"""The ``Mesh.preset`` of every structure surface (its name and colour are its own)."""

MIN_TRIANGLES = 2_000
"""The floor of a structure's share of the budget (or all it has, when it has fewer)."""

PASS_BAND = 0.1
ITERATIONS = 20
# Waves shorter than about 14 edges are cut: the staircase's steps, not the organ's shape.
HOLD_VOXELS = 0.4
"""How far (in voxels, along each axis) smoothing and the volume offset may move a vertex from marching cubes:
less than half a voxel, which leaves decimation room to stay within it too."""
VOLUME_STEPS = 6
# Below this many crop voxels a structure is meshed in the parent: forking costs more than it saves.
_PARALLEL_VOXELS = 2_000_000


def structure_meshes(
    volume: Volume,
    masks: Sequence[StructureMask],
    *,
    target_triangles: int = DEFAULT_TARGET_TRIANGLES,
    workers: int | None = None,
    progress: Progress | None = None,
) -> list[Mesh]:
    """One Mesh per mask, in order (an empty mask gives an empty Mesh). ``volume`` supplies the grid only (its
    geometry; the masks were made on it). Requires target_triangles > 0 and a volume of at least two slices.
    Reports ("meshing", n, len(masks)) as structures finish."""
    progress = progress or no_progress
    workers = workers or available_cpus()
    budgets = triangle_budgets(volume, masks, target_triangles)
    total = len(masks)
    progress("meshing", 0, total)
    order = sorted(range(total), key=lambda n: -masks[n].mask.size)  # the large ones first: less idle time
    crop_voxels = sum(m.mask.size for m in masks)
    results: list[tuple[np.ndarray, np.ndarray] | None] = [None] * total
    if workers > 1 and total > 1 and crop_voxels >= _PARALLEL_VOXELS and fork_possible():
        global _inherited
        _inherited = (volume, masks, budgets)
        try:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(min(workers, total), mp_context=context) as pool:
                for done, (n, result) in enumerate(zip(order, pool.map(_surface_in_worker, order), strict=True), 1):
                    results[n] = result
                    progress("meshing", done, total)
        finally:
            _inherited = None
    else:
        for done, n in enumerate(order, 1):
            results[n] = structure_surface(volume, masks[n], budgets[n])
            progress("meshing", done, total)
    return [_mesh(volume, mask, *result) for mask, result in zip(masks, results, strict=True)]  # type: ignore[misc]


_inherited: tuple[Volume, Sequence[StructureMask], list[int]] | None = None


def _surface_in_worker(n: int) -> tuple[np.ndarray, np.ndarray]:
    assert _inherited is not None
    volume, masks, budgets = _inherited
    return structure_surface(volume, masks[n], budgets[n])


def triangle_budgets(volume: Volume, masks: Sequence[StructureMask], target_triangles: int) -> list[int]:
    """Each structure's share of ``target_triangles``, by the area of its voxel faces, at least MIN_TRIANGLES."""
    dk = float(np.median(volume.slice_spacings)) if volume.shape[0] > 1 else 1.0
    drow, dcol = volume.pixel_spacing
    face_area = (drow * dcol, dk * dcol, dk * drow)  # faces across k, j, i
    areas = np.array([_voxel_face_area(m.mask, face_area) for m in masks], dtype=np.float64)
    total = float(areas.sum()) or 1.0
    return [max(MIN_TRIANGLES, int(target_triangles * a / total)) for a in areas]


def _voxel_face_area(mask: np.ndarray, face_area: tuple[float, float, float]) -> float:
    """The area (mm²) of the faces between the mask's voxels and the outside (the crop's edge included)."""
    if mask.size == 0:
        return 0.0
    area = 0.0
    for axis in range(3):
        inner = np.count_nonzero(np.diff(mask, axis=axis))
        edges = np.count_nonzero(mask.take(0, axis=axis)) + np.count_nonzero(mask.take(-1, axis=axis))
        area += (inner + edges) * face_area[axis]
    return area


def structure_surface(volume: Volume, mask: StructureMask, target: int) -> tuple[np.ndarray, np.ndarray]:
    """The surface of one mask (steps 1-4 of the module docstring): vertices (V, 3) float64 in LPS mm and faces
    (F, 3) int64 wound counter-clockwise seen from outside, at most about ``target`` of them (or all when fewer
    than MIN_TRIANGLES). Empty arrays for an empty mask."""
    if mask.mask.size == 0 or not mask.mask.any():
        return np.empty((0, 3)), np.empty((0, 3), dtype=np.int64)
    padded = np.pad(mask.mask, 1).astype(np.float32)
    kji, faces, _, _ = marching_cubes(padded, 0.5, allow_degenerate=False)
    kji = kji.astype(np.float64) + (np.asarray(mask.start, dtype=np.float64) - 1.0)
    faces = faces.astype(np.int64)
    adjacency = edge_adjacency(faces, len(kji))
    smoothed = windowed_sinc(kji, adjacency, pass_band=PASS_BAND, iterations=ITERATIONS)
    held = _hold(kji, smoothed)
    held = _restore_volume(kji, held, faces, float(mask.voxels))
    if not winding_is_outward(volume):
        faces = faces[:, ::-1]
    vertices = volume.index_to_lps(held)
    if len(faces) > max(target, MIN_TRIANGLES):
        vertices, faces = decimate(vertices, faces, target)
    return vertices, faces


def _hold(start: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """``moved`` within HOLD_VOXELS of ``start`` along each axis."""
    return start + np.clip(moved - start, -HOLD_VOXELS, HOLD_VOXELS)


def _restore_volume(start: np.ndarray, kji: np.ndarray, faces: np.ndarray, voxels: float) -> np.ndarray:
    """``kji`` offset along marching cubes' normals (index space) so that it encloses ``voxels`` voxels, held
    near ``start``. Each step is a Newton step on the enclosed volume (its derivative is the area); the
    directions and the area are those of ``start``, which smoothing cannot have collapsed (a lone voxel's
    octahedron smooths to a point)."""
    _, start_area, normals = _volume_area_normals(start, faces)
    for _ in range(VOLUME_STEPS):
        enclosed, area, _ = _volume_area_normals(kji, faces)
        area = area if area > 0.1 * start_area else start_area
        if area <= 0 or abs(voxels - enclosed) <= 1e-4 * voxels:
            break
        kji = _hold(start, kji + ((voxels - enclosed) / area) * normals)
    return kji


def _volume_area_normals(kji: np.ndarray, faces: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Enclosed volume and area (index units) and outward unit vertex normals of a closed mesh in marching
    cubes' winding (normals toward decreasing values: outward of the mask)."""
    a, b, c = kji[faces[:, 0]], kji[faces[:, 1]], kji[faces[:, 2]]
    cross = np.cross(b - a, c - a)
    signed = float(np.einsum("ij,ij->", a, np.cross(b, c))) / 6.0
    area = float(np.linalg.norm(cross, axis=1).sum()) / 2.0
    sums = np.zeros_like(kji)
    for corner in range(3):
        np.add.at(sums, faces[:, corner], cross)
    length = np.linalg.norm(sums, axis=1, keepdims=True)
    normals = np.divide(sums, length, out=np.zeros_like(sums), where=length > 0)
    # The winding's sign: outward normals make the signed volume positive.
    sign = 1.0 if signed >= 0 else -1.0
    return abs(signed), area, sign * normals


def _mesh(volume: Volume, mask: StructureMask, vertices: np.ndarray, faces: np.ndarray) -> Mesh:
    structure = mask.structure
    extras = {
        "structure": structure.number,
        "name": structure.name,
        "color": hex_color(structure.color),
        "code": dict(structure.code),
        "volume_ml": round(mask.volume_ml(volume), 3),
        "voxels": mask.voxels,
    }
    return Mesh(
        preset=PRESET,
        threshold=0.5,
        vertices=np.asarray(vertices, dtype=np.float32).reshape(-1, 3),
        faces=np.asarray(faces, dtype=np.uint32).reshape(-1, 3),
        normals=vertex_normals(vertices, faces) if len(faces) else np.empty((0, 3), np.float32),
        name=structure.name,
        color=linear_rgba(structure.color),
        extras=extras,
    )


def enclosed_volume_mm3(mesh: Mesh) -> float:
    """The volume a closed mesh encloses (mm³), by the divergence theorem."""
    v = mesh.vertices.astype(np.float64)
    f = mesh.faces.astype(np.int64)
    if len(f) == 0:
        return 0.0
    return abs(float(np.einsum("ij,ij->", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])))) / 6.0


def surface_area_mm2(mesh: Mesh) -> float:
    v = mesh.vertices.astype(np.float64)
    f = mesh.faces.astype(np.int64)
    return float(np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1).sum()) / 2.0

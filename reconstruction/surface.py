"""Surface extraction: one tissue preset of a Volume -> a Mesh in patient LPS millimetres.

The steps, and why they are there:

1. One threaded pass over the voxels finds the bounding box of the voxels above the level and counts, on every
   fourth slice, the voxel edges the iso-surface crosses: that predicts the full-resolution triangle count.
2. When that count is far above the budget, marching cubes samples block sums (a box filter: anti-aliased
   downsampling) with the finest integer block factors predicted to give at most twice the budget, but with
   samples never more than ``MAX_SAMPLE_SPACING_MM`` apart. Marching millions of voxels and decimating
   millions of triangles is what makes a naive pipeline slow; this does a quarter to an eighth of that work.
3. Marching cubes runs in index space on z-slabs in parallel processes (``isosurface``); for an outer surface
   (skin) on samples whose body interior is filled and whose outside is emptied (``body``).
4. Faces are wound counter-clockwise seen from outside the tissue in LPS, whatever the stack's handedness;
   optionally only the largest connected surfaces are kept; Taubin smoothing (``smoothing``).
5. After downsampling, every vertex is projected onto the full-resolution iso-surface (``refine``): the box
   filter moves low-contrast edges by a fraction of a block, the projection takes that back.
   Where slices are thick, the terraces they leave are smoothed along the stack, by half a slice at most.
6. Every vertex is mapped through ``Volume.index_to_lps``: exact for gantry tilt and uneven slice spacing.
7. Quadric decimation to the budget when still above it (``decimate``); area-weighted vertex normals.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy.sparse.csgraph import connected_components

from .body import fill_body
from .decimate import decimate, drop_unused_vertices
from .errors import SurfaceError
from .isosurface import SamplingGrid, marching_cubes_slabs
from .mesh import Mesh
from .presets import Preset, level_for, preset_for
from .progress import Progress, no_progress
from .refine import project_onto_isosurface
from .smoothing import edge_adjacency, taubin, windowed_sinc
from .volume import Volume

DEFAULT_TARGET_TRIANGLES = 300_000
# The coarsest sample spacing used to save triangles; beyond it the rest is left to decimation. On the
# project's CT head phantom (bench/reconstruct.py) 1.4 mm keeps the 95th-percentile distance to the
# full-resolution surface near 0.3 mm; 1.5 mm already reaches 0.5 mm (thin walls fold into their blocks).
MAX_SAMPLE_SPACING_MM = 1.4
# Marching cubes may make up to this many times the budget: quadric decimation costs about 1.5 µs per input
# triangle, and halving a mesh keeps it within hundredths of a millimetre of itself.
DECIMATION_HEADROOM = 2.0
# Slices farther apart than this leave terraces that smooth_across_slices removes by default. Its filter cuts
# waves shorter than about 25 edges: terraces are one slice high and, on gently sloping surfaces, tens of edges
# wide.
SLICE_SMOOTHING_ABOVE_MM = 2.0
SLICE_PASS_BAND = 0.03
SLICE_ITERATIONS = 40
SLICE_STEEP = 0.5  # the cosine of 60°
# Crossing edges are counted on every n-th slice only.
_COUNT_EVERY = 4
_SCAN_SLICES = 16


@dataclass(frozen=True)
class LevelScan:
    """What one pass over the voxels tells about the iso-surface at a level.

    ``lo``/``hi``: the voxel-index bounding box [lo, hi) of the voxels above the level. ``crossings``:
    estimated number of voxel edges along (k, j, i) whose ends are on opposite sides of the level.
    """

    lo: tuple[int, int, int]
    hi: tuple[int, int, int]
    crossings: tuple[float, float, float]

    def triangles(self, factors: tuple[int, int, int] = (1, 1, 1)) -> float:
        """Predicted marching-cubes triangles when sampling with block ``factors`` (about two per vertex)."""
        fk, fj, fi = factors
        ck, cj, ci = self.crossings
        return 2.0 * (ck / (fj * fi) + cj / (fk * fi) + ci / (fk * fj))


def extract_surface(
    volume: Volume,
    preset: Preset | str,
    *,
    threshold: float | None = None,
    target_triangles: int = DEFAULT_TARGET_TRIANGLES,
    keep_largest: int | Literal["preset"] | None = "preset",
    smooth: bool = True,
    slice_smoothing: bool | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> Mesh:
    """The iso-surface of ``volume`` for ``preset`` (a Preset or its name for the volume's modality).

    ``threshold`` overrides the preset's level (volume units, e.g. HU). ``keep_largest`` keeps that many
    largest connected surfaces (a hollow object's inner wall counts as a surface of its own); None keeps all,
    "preset" uses the preset's choice. ``slice_smoothing`` smooths away the terraces of thick slices
    (`smooth_across_slices`); None does so when the slices are more than SLICE_SMOOTHING_ABOVE_MM apart.
    ``workers`` defaults to the CPUs this process may use. Requires target_triangles > 0; raises SurfaceError
    when the level is outside the data range.
    """
    progress = progress or no_progress
    if not isinstance(preset, Preset):
        preset = preset_for(preset, volume.modality)
    source = f"{volume.modality} volume {'x'.join(map(str, volume.shape))}"
    if target_triangles <= 0:
        raise SurfaceError(source, f"target_triangles must be positive, got {target_triangles}")
    if min(volume.shape) < 2:
        raise SurfaceError(source, "a surface needs at least two samples along every axis")
    level = float(threshold) if threshold is not None else level_for(preset, volume)
    workers = workers or available_cpus()

    scan = scan_volume(volume.voxels, level, workers=workers)
    if scan is None:
        lo, hi = volume.voxels.min(), volume.voxels.max()
        raise SurfaceError(source, f"level {level:g} is outside the data range [{lo:g}, {hi:g}]")
    factors = block_factors(volume.spacing_mm, scan, target_triangles)
    kji, faces = _march(volume, scan, factors, level, workers, preset.outer)
    if len(faces) == 0 and factors != (1, 1, 1):
        # All the tissue was thinner than a block and averaged away: sample at full resolution instead.
        factors = (1, 1, 1)
        kji, faces = _march(volume, scan, factors, level, workers, preset.outer)
    # Vertices on the volume's faces (the caps of surfaces cut by its edge) stay there from here on.
    on_edge = ((kji == 0) | (kji == np.array(volume.shape) - 1)).any(axis=1)
    if not winding_is_outward(volume):
        faces = faces[:, ::-1]

    keep = preset.keep_largest if keep_largest == "preset" else keep_largest
    if slice_smoothing is None:
        slice_smoothing = volume.spacing_mm[0] > SLICE_SMOOTHING_ABOVE_MM
    adjacency = edge_adjacency(faces, len(kji))
    # Each connected surface is smoothed on its own, so the ones left out are dropped at the end, cheaply.
    kept = largest_surfaces(faces, adjacency, keep) if keep is not None else None
    # Smoothing in index space is smoothing in LPS: the umbrella operator commutes with affine maps, and
    # index -> LPS is affine (piecewise affine when the slice spacing varies).
    if smooth:
        kji = taubin(kji, adjacency, fixed=on_edge)
    if factors != (1, 1, 1):
        reach = max(f * s for f, s in zip(factors, volume.spacing_mm, strict=True))
        kji = project_onto_isosurface(volume, kji, level, max_step_mm=reach, fixed=on_edge)
    if slice_smoothing:
        kji = smooth_across_slices(volume, kji, faces, adjacency, fixed=on_edge)
    del adjacency
    if kept is not None:
        kji, faces = drop_unused_vertices(kji, faces[kept])
    vertices = volume.index_to_lps(kji)
    del kji
    if len(faces) > target_triangles:
        progress("decimating", 0, 1)
        vertices, faces = decimate(vertices, faces, target_triangles)
        progress("decimating", 1, 1)
    return Mesh(
        preset=preset.name,
        threshold=level,
        vertices=vertices.astype(np.float32),
        faces=faces.astype(np.uint32),
        normals=vertex_normals(vertices, faces),
        keep_largest=keep,
        slice_smoothing=slice_smoothing,
    )


def smooth_across_slices(
    volume: Volume, kji: np.ndarray, faces: np.ndarray, adjacency, *, fixed: np.ndarray | None = None
) -> np.ndarray:
    """Vertices ``kji`` (voxel indices) with the terraces of thick slices smoothed away, each moved only along
    the stack (its row and column stay), by no more than half the (narrowest) slice spacing.

    Between thick slices the image says little about where along the stack a surface crosses: that is the
    freedom used. The surface is low-pass filtered (windowed sinc, SLICE_PASS_BAND: terraces are one slice high
    and tens of edges wide), and each vertex moves along the stack toward the filtered surface: all the way
    where the surface runs along the slices (the terraces), not at all where it runs straight across them
    (there the rows and columns already place it). Requires adjacency from edge_adjacency for
    these faces and at least two slices.
    """
    start = np.asarray(kji, dtype=np.float64)
    smoothed = windowed_sinc(start, adjacency, pass_band=SLICE_PASS_BAND, iterations=SLICE_ITERATIONS, fixed=fixed)
    # The filter is linear with weights that ignore geometry, so it commutes with index -> LPS.
    here, there = volume.index_to_lps(start), volume.index_to_lps(smoothed)
    normals = vertex_normals(there, faces).astype(np.float64)
    interval = np.clip(np.floor(start[:, 0]).astype(np.int64), 0, volume.shape[0] - 2)
    steps = np.diff(volume.positions, axis=0)[interval]
    step_mm = np.linalg.norm(steps, axis=1)
    along = np.einsum("ij,ij->i", normals, steps / step_mm[:, None])
    offset = np.einsum("ij,ij->i", there - here, normals)
    # Reach the filtered surface along the normal (tangential drift of the vertices does not count) by moving
    # along the stack: fully where the surface is within 60° of the slices' plane, less and less where it is
    # steeper, and not at all where it runs straight across them.
    move_mm = offset * along / np.maximum(along**2, SLICE_STEEP**2)
    out = start.copy()
    out[:, 0] += move_mm / step_mm
    np.clip(out[:, 0], 0.0, volume.shape[0] - 1, out=out[:, 0])
    if fixed is not None:
        out[fixed] = start[fixed]
    return _within(volume, start, out, 0.5 * float(np.min(volume.slice_spacings)))


def _within(volume: Volume, start: np.ndarray, moved: np.ndarray, bound_mm: float) -> np.ndarray:
    """``moved`` pulled back toward ``start`` (voxel indices) wherever it lies more than ``bound_mm`` away in
    LPS. Index -> LPS is affine between two slices, so scaling the step is exact there; a step across a slice
    is scaled again until it fits."""
    origin = volume.index_to_lps(start)
    out = moved.copy()
    for _ in range(4):
        distance = np.linalg.norm(volume.index_to_lps(out) - origin, axis=1)
        over = distance > bound_mm
        if not over.any():
            return out
        scale = (bound_mm / distance[over]) * (1.0 - 1e-9)
        out[over] = start[over] + (out[over] - start[over]) * scale[:, None]
    distance = np.linalg.norm(volume.index_to_lps(out) - origin, axis=1)
    out[distance > bound_mm] = start[distance > bound_mm]
    return out


def _march(
    volume: Volume, scan: LevelScan, factors: tuple[int, int, int], level: float, workers: int, outer: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes on the sampling grid of ``factors``: vertices as voxel indices (N, 3), faces (F, 3).
    With ``outer``, of the body's outer surface only (``body``)."""
    grid, grid_level = sampling_grid(volume.voxels, scan, factors, level)
    if outer:
        spacing = tuple(f * s for f, s in zip(factors, volume.spacing_mm, strict=True))
        grid = replace(grid, values=fill_body(grid.all_samples(workers), grid_level, spacing))  # type: ignore[arg-type]
    integral = np.issubdtype(volume.voxels.dtype, np.integer)
    kji, faces = marching_cubes_slabs(grid, grid_level, workers=workers, allow_degenerate=integral)
    return grid.to_voxel_index(kji), faces


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def scan_volume(voxels: np.ndarray, level: float, *, workers: int = 1) -> LevelScan | None:
    """Bounding box of the voxels above ``level`` and the crossing-edge counts; None when no voxel or every
    voxel is above the level (the level is outside the data range). Requires a 3D array."""
    n = voxels.shape[0]
    chunks = [(k0, min(k0 + _SCAN_SLICES, n)) for k0 in range(0, n, _SCAN_SLICES)]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        parts = list(pool.map(lambda c: _scan_chunk(voxels, level, *c), chunks))
    along_k = np.concatenate([p[0] for p in parts])
    along_j = np.logical_or.reduce([p[1] for p in parts])
    along_i = np.logical_or.reduce([p[2] for p in parts])
    if not along_k.any() or not any(p[3] for p in parts):
        return None
    crossings = np.sum([p[4] for p in parts], axis=0) * float(_COUNT_EVERY)
    lo, hi = zip(*(_extent(a) for a in (along_k, along_j, along_i)), strict=True)
    return LevelScan(lo=tuple(lo), hi=tuple(hi), crossings=tuple(float(c) for c in crossings))


def _scan_chunk(voxels: np.ndarray, level: float, k0: int, k1: int):
    """Per-chunk part of scan_volume for slices k0..k1-1 (may read slice k1 too, for the k-edges).

    Max/min reductions on the raw voxels are several times faster than building a boolean mask.
    """
    block = voxels[k0:k1]
    across_j_i = block.max(axis=0)
    across_k_i = block.max(axis=1)
    counted = np.arange((-k0) % _COUNT_EVERY, k1 - k0, _COUNT_EVERY)
    sampled = block[counted] > level
    # k-edges on every other counted slice, so the estimate reads few extra slices; scaled by two.
    pairs = counted[::2]
    pairs = pairs[k0 + pairs + 1 < voxels.shape[0]]
    crossings = (
        2 * np.count_nonzero(sampled[::2][: len(pairs)] != (voxels[k0 + pairs + 1] > level)),
        np.count_nonzero(sampled[:, 1:, :] != sampled[:, :-1, :]),
        np.count_nonzero(sampled[:, :, 1:] != sampled[:, :, :-1]),
    )
    return (
        across_k_i.max(axis=1) > level,
        across_j_i.max(axis=1) > level,
        across_k_i.max(axis=0) > level,
        bool(block.min() < level),
        crossings,
    )


def _extent(flags: np.ndarray) -> tuple[int, int]:
    """[first, last + 1) of the True entries. Requires at least one."""
    where = np.flatnonzero(flags)
    return int(where[0]), int(where[-1]) + 1


def block_factors(
    spacing_mm: tuple[float, float, float], scan: LevelScan, target_triangles: int
) -> tuple[int, int, int]:
    """Block factors (k, j, i) for sampling: the finest near-isotropic sampling predicted to give at most
    DECIMATION_HEADROOM times the budget, but no coarser than MAX_SAMPLE_SPACING_MM along an axis that starts
    finer (decimation takes the rest), or than half the edge of the triangles a small budget affords.
    Requires positive spacings."""
    spacing = [s if s > 0 else 1.0 for s in spacing_mm]
    # Triangle edges scale with the square root of the area each triangle has to cover.
    afforded = math.prod(spacing) ** (1 / 3) * math.sqrt(max(scan.triangles() / target_triangles, 1.0))
    coarsest = max(MAX_SAMPLE_SPACING_MM, afforded / 2)
    candidates = sorted({s * f for s in spacing for f in range(1, 9) if s * f <= coarsest + 1e-6})
    chosen = (1, 1, 1)
    for h in candidates:
        chosen = tuple(max(1, math.floor(h / s + 1e-6)) for s in spacing)  # type: ignore[assignment]
        if scan.triangles(chosen) <= DECIMATION_HEADROOM * target_triangles:
            break
    return chosen


def sampling_grid(
    voxels: np.ndarray, scan: LevelScan, factors: tuple[int, int, int], level: float
) -> tuple[SamplingGrid, float]:
    """The grid marching cubes samples (the bounding box plus one block, in blocks of ``factors``) and the
    level in grid units (block sums).

    On integer data a level that a block sum can equal exactly is raised by half a sum unit (1/16 HU for 2x2x2
    blocks): an exact hit makes zero-area triangles, and half a unit moves the surface by nothing measurable.
    """
    # A margin of one whole block keeps the padding away from the surface, except at the volume's edge.
    start = tuple(max(lo - f, 0) for lo, f in zip(scan.lo, factors, strict=True))
    stop = tuple(min(hi + f, n) for hi, f, n in zip(scan.hi, factors, voxels.shape, strict=True))
    blocks = tuple(math.ceil((b - a) / f) for a, b, f in zip(start, stop, factors, strict=True))
    size = math.prod(factors)
    grid_level = level * size
    if np.issubdtype(voxels.dtype, np.integer):
        if grid_level == math.floor(grid_level):
            grid_level += 0.5
        pad = grid_level - 0.25
    else:
        pad = grid_level - max(abs(grid_level), 1.0) * 1e-3
    grid = SamplingGrid(voxels, start, factors, blocks, pad)  # type: ignore[arg-type]
    return grid, grid_level


def winding_is_outward(volume: Volume) -> bool:
    """Whether scikit-image's winding (negative orientation in (k, j, i) index space, for
    gradient_direction="descent") is counter-clockwise seen from outside in LPS: true when the index->LPS map
    reverses orientation, as it does for a stack sorted along row × column direction. Requires >= 2 slices."""
    dk = volume.positions[-1] - volume.positions[0]
    dj = volume.pixel_spacing[0] * np.asarray(volume.column_direction, dtype=np.float64)
    di = volume.pixel_spacing[1] * np.asarray(volume.row_direction, dtype=np.float64)
    return float(np.linalg.det(np.stack([dk, dj, di], axis=1))) < 0.0


def largest_surfaces(faces: np.ndarray, adjacency, keep: int) -> np.ndarray:
    """Which faces (F,) bool belong to the ``keep`` connected surfaces with the most faces.

    Requires keep >= 1 and adjacency from edge_adjacency(faces, vertex count).
    """
    count, labels = connected_components(adjacency, directed=False)
    if count <= keep:
        return np.ones(len(faces), dtype=bool)
    face_label = labels[faces[:, 0]]
    sizes = np.bincount(face_label, minlength=count)
    return np.isin(face_label, np.argsort(sizes)[::-1][:keep])


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) float32, oriented like the faces' winding (counter-clockwise
    seen from the side the normal points to). A vertex without area around it gets +z."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    # The cross product's length is twice the face area: summing it weights each face by its area.
    face_normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    sums = np.empty((len(v), 3), dtype=np.float64)
    corners = f.ravel()
    for axis in range(3):
        sums[:, axis] = np.bincount(corners, np.repeat(face_normals[:, axis], 3), minlength=len(v))
    length = np.linalg.norm(sums, axis=1, keepdims=True)
    normals = np.divide(sums, length, out=np.zeros_like(sums), where=length > 0)
    normals[length[:, 0] == 0] = (0.0, 0.0, 1.0)
    return normals.astype(np.float32)

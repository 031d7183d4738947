"""Refinement of a coarse iso-surface onto the full-resolution one.

A surface extracted from block-averaged samples has the right shape but sits where the *averaged* image crosses
the level, which is not where the image itself does: the box filter moves low-contrast edges (cancellous bone
against soft tissue) by a large fraction of a block. Each vertex is therefore moved onto the level set of the
full-resolution image, trilinearly interpolated, with a few Newton steps along the gradient in the physical
metric (the shortest way to the surface in millimetres, also in a sheared or anisotropic grid).
"""

from __future__ import annotations

import numpy as np

from .volume import Volume

NEWTON_STEPS = 2


def project_onto_isosurface(
    volume: Volume,
    kji: np.ndarray,
    level: float,
    *,
    max_step_mm: float,
    fixed: np.ndarray | None = None,
    steps: int = NEWTON_STEPS,
) -> np.ndarray:
    """Vertices ``kji`` (N, 3 voxel indices) moved onto the ``level`` set of the trilinear image, as far as
    ``max_step_mm`` in all. Vertices flagged ``fixed``, on a flat image, or that would end farther from the level
    than they started, stay where they are. Requires at least two voxels along every axis."""
    start = np.asarray(kji, dtype=np.float64)
    inverse_metric = np.linalg.inv(_metric(volume))
    upper = np.array(volume.shape, dtype=np.float64) - 1
    y = start.copy()
    value, gradient = trilinear(volume.voxels, y)
    start_misfit = np.abs(value - level)
    for step in range(steps):
        if step:
            value, gradient = trilinear(volume.voxels, y)
        # Newton step to the linearised level set, shortest in the physical metric: -f G⁻¹∇f / (∇fᵀ G⁻¹∇f).
        direction = gradient @ inverse_metric
        slope = np.einsum("ij,ij->i", gradient, direction)
        scale = np.divide(value - level, slope, out=np.zeros_like(slope), where=slope > 1e-12)
        y -= scale[:, None] * direction
        np.clip(y, 0.0, upper, out=y)
    value, _ = trilinear(volume.voxels, y)
    stay = (np.abs(value - level) > start_misfit) | (_length_mm(y - start, volume) > max_step_mm)
    if fixed is not None:
        stay |= fixed
    return np.where(stay[:, None], start, y)


def trilinear(voxels: np.ndarray, kji: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trilinear interpolation of ``voxels`` at (N, 3) voxel indices inside the volume, and its gradient
    (N, 3) per voxel index. Requires at least two voxels along every axis."""
    n = np.array(voxels.shape)
    cell = np.clip(np.floor(kji).astype(np.intp), 0, n - 2)
    t = (kji - cell).astype(np.float32)
    tk, tj, ti = t[:, 0], t[:, 1], t[:, 2]
    s_k, s_j = int(n[1] * n[2]), int(n[2])
    base = cell[:, 0] * s_k + cell[:, 1] * s_j + cell[:, 2]
    offsets = np.array([0, 1, s_j, s_j + 1, s_k, s_k + 1, s_k + s_j, s_k + s_j + 1], dtype=np.intp)
    corners = voxels.reshape(-1).take(base[:, None] + offsets).astype(np.float32)
    c000, c001, c010, c011, c100, c101, c110, c111 = corners.T
    d00, d01, d10, d11 = c001 - c000, c011 - c010, c101 - c100, c111 - c110
    a00, a01, a10, a11 = c000 + d00 * ti, c010 + d01 * ti, c100 + d10 * ti, c110 + d11 * ti
    b0, b1 = a00 + (a01 - a00) * tj, a10 + (a11 - a10) * tj
    value = b0 + (b1 - b0) * tk
    gradient = np.empty((len(kji), 3), dtype=np.float64)
    gradient[:, 0] = b1 - b0
    gradient[:, 1] = (a01 - a00) + ((a11 - a10) - (a01 - a00)) * tk
    e0, e1 = d00 + (d01 - d00) * tj, d10 + (d11 - d10) * tj
    gradient[:, 2] = e0 + (e1 - e0) * tk
    return value.astype(np.float64), gradient


def _metric(volume: Volume) -> np.ndarray:
    """JᵀJ of the (mean) index->LPS Jacobian J: squared lengths and angles of the voxel axes in mm."""
    jacobian = _jacobian(volume)
    return jacobian.T @ jacobian


def _jacobian(volume: Volume) -> np.ndarray:
    n = volume.shape[0]
    dk = (volume.positions[-1] - volume.positions[0]) / max(n - 1, 1)
    dj = volume.pixel_spacing[0] * np.asarray(volume.column_direction, dtype=np.float64)
    di = volume.pixel_spacing[1] * np.asarray(volume.row_direction, dtype=np.float64)
    return np.stack([dk, dj, di], axis=1)


def _length_mm(delta: np.ndarray, volume: Volume) -> np.ndarray:
    return np.linalg.norm(delta @ _jacobian(volume).T, axis=1)

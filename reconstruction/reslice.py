"""Reslicing: the image on an oblique plane through a Volume, in patient LPS millimetres.

A `Plane` is the image's centre (`origin`), two orthonormal in-plane directions (`u` along an image row, left to
right; `v` down a column), its size in mm and its columns; the rows follow from the aspect ratio. Pixel (row r,
column c) is centred at

    origin + ((c + 0.5) - columns/2) * (width/columns) * u + ((r + 0.5) - rows/2) * (height/rows) * v

`reslice` samples each pixel centre trilinearly through each slice's true position: its distance along the
stack normal puts it between two acquired slices (by their real ImagePositionPatient, so uneven spacing is
exact), each of those is sampled bilinearly where the point projects onto it along the normal (by that slice's
own IPP, so a gantry tilt's shear is exact), and the two values are blended by the point's distance from each.
Nothing is resampled beforehand. A plane lying on an acquired slice, through the centres of its pixels, gives
back that slice's values. A point within half a voxel of the stack's edge takes the edge's value (the voxel it
lies in); further out the image is air (`air_value`).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .volume import Volume

MIN_COLUMNS, MAX_COLUMNS = 16, 2048
MAX_ROWS = 2048
MAX_SIZE_MM = 10_000.0
UNIT_TOLERANCE = 1e-3
"""How far |u| and |v| may be from 1, and u . v from 0, before a plane is degenerate (then they are made exact)."""

CT_AIR = -1024.0


class PlaneError(ValueError):
    """A plane that gives no image: non-unit or non-orthogonal directions, no size, too few or many pixels."""


@dataclass(frozen=True)
class Plane:
    """An image plane in LPS mm (see the module docstring). Build one with `Plane.checked`."""

    origin: tuple[float, float, float]
    u: tuple[float, float, float]
    v: tuple[float, float, float]
    width_mm: float
    height_mm: float
    columns: int

    @classmethod
    def checked(cls, origin, u, v, width_mm: float, height_mm: float, columns: int) -> Plane:
        """The plane, with u and v made exactly orthonormal. Raises PlaneError naming what is wrong."""
        o = _finite3(origin, "origin")
        a, b = _finite3(u, "u"), _finite3(v, "v")
        for name, vector in (("u", a), ("v", b)):
            norm = float(np.linalg.norm(vector))
            if abs(norm - 1.0) > UNIT_TOLERANCE:
                raise PlaneError(f"{name} must be a unit vector (its length is {norm:.6g})")
        a = a / np.linalg.norm(a)
        cosine = float(a @ b)
        if abs(cosine) > 1.0 - UNIT_TOLERANCE:
            raise PlaneError("u and v are parallel: they span no plane")
        if abs(cosine) > UNIT_TOLERANCE:
            raise PlaneError(f"u and v must be orthogonal (u . v = {cosine:.6g})")
        b = b - cosine * a
        b = b / np.linalg.norm(b)
        for name, size in (("width_mm", width_mm), ("height_mm", height_mm)):
            if not (math.isfinite(size) and 0.0 < size <= MAX_SIZE_MM):
                raise PlaneError(f"{name} must be a positive number of mm, at most {MAX_SIZE_MM:g}")
        if not MIN_COLUMNS <= columns <= MAX_COLUMNS:
            raise PlaneError(f"px must be from {MIN_COLUMNS} to {MAX_COLUMNS} pixels")
        plane = cls(tuple(o.tolist()), tuple(a.tolist()), tuple(b.tolist()), float(width_mm), float(height_mm),
                    int(columns))
        if plane.rows > MAX_ROWS:
            raise PlaneError(f"the image would have {plane.rows} rows, more than {MAX_ROWS}: "
                             "height_mm is too large for width_mm")
        return plane

    @property
    def rows(self) -> int:
        """round(columns * height / width), at least 1."""
        return max(1, round(self.columns * self.height_mm / self.width_mm))

    @property
    def normal(self) -> np.ndarray:
        """u x v: the side the image is seen from with u to the right and v down is -normal."""
        return np.cross(self.u, self.v)

    def pixel_centres(self) -> np.ndarray:
        """(rows, columns, 3) LPS mm of every pixel's centre."""
        down, across = self._offsets()
        return (np.asarray(self.origin)[None, None, :] + down[:, None, None] * np.asarray(self.v)[None, None, :]
                + across[None, :, None] * np.asarray(self.u)[None, None, :])

    def projections(self, axis: np.ndarray) -> np.ndarray:
        """(rows, columns): each pixel centre's projection on `axis`, a 3-vector (in mm for a unit axis). An
        outer sum, since the centres are a grid: no (rows, columns, 3) array is made."""
        down, across = self._offsets()
        return _grid(self, np.asarray(axis, dtype=np.float64), down, across)

    def _offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """The pixel centres' offsets from the origin (mm): down the columns (rows,), across the rows (columns,)."""
        rows, columns = self.rows, self.columns
        down = ((np.arange(rows) + 0.5) - rows / 2) * (self.height_mm / rows)
        across = ((np.arange(columns) + 0.5) - columns / 2) * (self.width_mm / columns)
        return down, across


def air_value(volume: Volume) -> float:
    """What lies outside the volume: -1024 HU for CT; otherwise 0 or, if lower, the image's minimum."""
    if volume.modality.upper() == "CT":
        return CT_AIR
    return min(0.0, float(volume.voxels.min()))


def reslice(volume: Volume, plane: Plane, *, air: float | None = None) -> np.ndarray:
    """The (rows, columns) float32 image of `volume` on `plane`, in the volume's units (HU for CT).

    `air` (default `air_value(volume)`) fills the pixels outside the volume. The image is made in blocks of
    rows, in parallel threads (numpy releases the GIL), each block small enough to stay in the CPU's caches.
    """
    stack = _Stack(volume, air_value(volume) if air is None else air)
    image = np.empty((plane.rows, plane.columns), dtype=np.float32)
    down, across = plane._offsets()
    step = max(1, BLOCK_PIXELS // plane.columns)
    blocks = [slice(start, start + step) for start in range(0, plane.rows, step)]

    def fill(block: slice) -> None:
        image[block] = stack.sample(plane, down[block], across)

    if len(blocks) == 1:
        fill(blocks[0])
    else:
        list(_pool().map(fill, blocks))
    return image


BLOCK_PIXELS = 16_384
"""Pixels sampled together: their temporaries (a few dozen bytes a pixel) fit a core's L2 cache."""

_threads: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _threads
    if _threads is None:
        _threads = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="reslice")
    return _threads


class _Stack:
    """What sampling a volume needs, per slice: its distance along the normal and its IPP's offsets along the
    row and column directions (in pixels); and the voxels as one flat array."""

    def __init__(self, volume: Volume, air: float):
        self.volume = volume
        self.air = np.float32(air)
        self.slices, self.rows, self.columns = volume.shape
        positions = volume.positions
        if self.slices == 1:  # one slice: a slab as thick as the slice, sampled as two identical slices
            positions = np.stack([positions[0], positions[0] + volume.normal * (volume.slice_thickness or 1.0)])
        drow, dcol = volume.pixel_spacing
        self.axes = (volume.normal, volume.row_direction / dcol, volume.column_direction / drow)
        self.distances = positions @ volume.normal
        self.origins_i = positions @ self.axes[1]
        self.origins_j = positions @ self.axes[2]
        self.flat = volume.voxels.reshape(-1)

    def sample(self, plane: Plane, down: np.ndarray, across: np.ndarray) -> np.ndarray:
        """The image's pixels at offsets `down` (rows,) and `across` (columns,) from the plane's origin."""
        along, i_plane, j_plane = (_grid(plane, axis, down, across) for axis in self.axes)
        last = len(self.distances) - 1
        k = _piecewise_linear(along, self.distances, np.arange(last + 1, dtype=np.float64))
        below = np.clip(np.floor(k), 0, last - 1).astype(np.intp)
        t = np.clip(k - below, 0.0, 1.0).astype(np.float32)
        outside = (k < -0.5) | (k > self.slices - 0.5)
        image = np.zeros(k.shape, dtype=np.float32)
        for which, weight in ((below, 1.0 - t), (below + 1, t)):
            i = i_plane - self.origins_i.take(which)
            j = j_plane - self.origins_j.take(which)
            outside |= (weight > 0) & ((i < -0.5) | (i > self.columns - 0.5) | (j < -0.5) | (j > self.rows - 0.5))
            if self.slices == 1:
                which = np.zeros_like(which)
            image += weight * self._bilinear(which, j, i)
        image[outside] = self.air
        return image

    def _bilinear(self, k: np.ndarray, j: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Slice k's value at row j, column i, bilinear between its four nearest pixels. A point past an edge
        (by up to half a pixel; further out is masked) takes the edge's value."""
        rows, columns = self.rows, self.columns
        np.clip(i, 0, columns - 1, out=i)
        np.clip(j, 0, rows - 1, out=j)
        i0 = np.minimum(i.astype(np.intp), max(columns - 2, 0))
        j0 = np.minimum(j.astype(np.intp), max(rows - 2, 0))
        fi = (i - i0).astype(np.float32)
        fj = (j - j0).astype(np.float32)
        corner = (k * rows + j0) * columns + i0
        step_i, step_j = (1 if columns > 1 else 0), (columns if rows > 1 else 0)
        flat = self.flat
        top = flat.take(corner).astype(np.float32)
        top += (flat.take(corner + step_i) - top) * fi
        bottom = flat.take(corner + step_j).astype(np.float32)
        bottom += (flat.take(corner + step_j + step_i) - bottom) * fi
        top += (bottom - top) * fj
        return top


def _grid(plane: Plane, axis: np.ndarray, down: np.ndarray, across: np.ndarray) -> np.ndarray:
    """(len(down), len(across)): the projections on `axis` of the pixel centres at these offsets."""
    return (float(np.dot(plane.origin, axis)) + down * float(np.dot(plane.v, axis)))[:, None] + (
        across * float(np.dot(plane.u, axis)))[None, :]


_FAR_MM = 1e7
"""Far enough past any stack that extrapolating to it covers every coordinate a room allows."""


def _piecewise_linear(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """The piecewise-linear function through (xp, fp) at x, continued linearly past both ends.

    Requires at least two xp, strictly increasing.
    """
    low = fp[0] - (fp[1] - fp[0]) / (xp[1] - xp[0]) * _FAR_MM
    high = fp[-1] + (fp[-1] - fp[-2]) / (xp[-1] - xp[-2]) * _FAR_MM
    return np.interp(x, np.r_[xp[0] - _FAR_MM, xp, xp[-1] + _FAR_MM], np.r_[low, fp, high])


def _finite3(value, name: str) -> np.ndarray:
    vector = np.asarray(value, dtype=np.float64)
    if vector.shape != (3,) or not np.all(np.isfinite(vector)):
        raise PlaneError(f"{name} must be three finite numbers")
    return vector

"""Volume: a stack of slices with exact patient geometry (LPS, millimetres).

Index conventions (numpy order): ``voxels[k, j, i]`` where ``k`` is the slice (sorted along the stack normal),
``j`` the row and ``i`` the column of a slice. A continuous index ``(k, j, i)`` maps to patient LPS mm as

    IPP(k) + i * Δcol * row_direction + j * Δrow * column_direction

where ``row_direction``/``column_direction`` are the first/second triplets of ImageOrientationPatient,
``Δrow, Δcol = PixelSpacing`` and ``IPP(k)`` interpolates linearly between the true ImagePositionPatient of the
two neighbouring slices. That keeps gantry tilt (a sheared stack) and uneven spacing exact without resampling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class Volume:
    """A geometrically exact 3D image in patient space.

    ``voxels``: (slices, rows, columns); int16 for CT (Hounsfield units), int16 or float32 otherwise.
    ``positions``: (slices, 3) float64 ImagePositionPatient of each slice, in stack order (ascending along
    ``normal``). ``pixel_spacing``: (Δrow, Δcol) in mm, as DICOM PixelSpacing.
    """

    voxels: np.ndarray
    positions: np.ndarray
    row_direction: np.ndarray
    column_direction: np.ndarray
    pixel_spacing: tuple[float, float]
    modality: str = "CT"
    units: str = "HU"
    slice_thickness: float | None = None
    description: str = ""
    series_uid: str = ""
    pixel_hash: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.voxels.ndim != 3:
            raise ValueError(f"voxels must be 3D, got shape {self.voxels.shape}")
        n = self.voxels.shape[0]
        if self.positions.shape != (n, 3):
            raise ValueError(f"positions must be ({n}, 3), got {self.positions.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(slices, rows, columns)."""
        return tuple(int(s) for s in self.voxels.shape)  # type: ignore[return-value]

    @property
    def normal(self) -> np.ndarray:
        """Unit stack normal ``row_direction × column_direction``."""
        n = np.cross(self.row_direction, self.column_direction)
        return n / np.linalg.norm(n)

    @property
    def slice_spacings(self) -> np.ndarray:
        """Distances along the normal between neighbouring slices, (slices - 1,) mm."""
        return np.diff(self.positions @ self.normal)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """(median slice spacing along the normal, Δrow, Δcol) in mm, for summaries."""
        s = self.slice_spacings
        dz = float(np.median(s)) if len(s) else float(self.slice_thickness or 0.0)
        return (dz, float(self.pixel_spacing[0]), float(self.pixel_spacing[1]))

    def index_to_lps(self, kji: np.ndarray) -> np.ndarray:
        """Map continuous indices (N, 3) in (k, j, i) order to LPS mm (N, 3) float64.

        Requires 0 <= k <= slices - 1. Slice positions are interpolated between the two real neighbours.
        """
        kji = np.asarray(kji, dtype=np.float64)
        k = kji[:, 0]
        n = self.positions.shape[0]
        if n == 1:
            origin = np.broadcast_to(self.positions[0], (len(k), 3))
        else:
            k0 = np.clip(np.floor(k).astype(np.int64), 0, n - 2)
            t = (k - k0)[:, None]
            origin = self.positions[k0] * (1.0 - t) + self.positions[k0 + 1] * t
        drow, dcol = self.pixel_spacing
        return (
            origin
            + (kji[:, 2] * dcol)[:, None] * self.row_direction[None, :]
            + (kji[:, 1] * drow)[:, None] * self.column_direction[None, :]
        )

    def bbox_lps_mm(self) -> np.ndarray:
        """[[xmin, ymin, zmin], [xmax, ymax, zmax]] of the voxel centres' hull."""
        n, r, c = self.shape
        corners = np.array(
            [[k, j, i] for k in (0, n - 1) for j in (0, r - 1) for i in (0, c - 1)], dtype=np.float64
        )
        p = self.index_to_lps(corners)
        return np.stack([p.min(axis=0), p.max(axis=0)])

"""Named structures: the segments of a segmentation, each a binary mask on the grid of the series it segments.

A `Structure` is what the file says about one segment (its number in the file, name, display colour, coded
meaning); a `StructureMask` is that structure's voxels on a Volume's grid, kept as the crop of its bounding box
so that a hundred small organs in a large CT cost their own size, not the CT's. The readers
(``dicom_seg``, ``rtstruct``, ``nifti_labels``) make them; ``structure_surface`` meshes them.

Colours are sRGB bytes, as DICOM's ROIDisplayColor and label tables give them; ``linear_rgba`` converts them for
glTF's ``baseColorFactor``. A DICOM SEG gives CIELab (``cielab_to_srgb``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .volume import Volume

# Structures without a colour of their own get one of these (sRGB), in order: distinct, and none of them bone's
# ivory or the skin's tone.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40), (128, 0, 0), (0, 0, 128),
)


@dataclass(frozen=True)
class Structure:
    """One segment as its file describes it. ``number``: the segment number (SEG), ROI number (RTSTRUCT) or
    label value (NIfTI). ``color``: sRGB bytes. ``code``: the coded meaning, as plain JSON (for a SEG
    ``{"category": {...}, "type": {...}}`` with each concept's ``value``, ``scheme`` and ``meaning``; for an
    RTSTRUCT ``{"interpreted_type": ...}``), or {}."""

    number: int
    name: str
    color: tuple[int, int, int]
    code: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class StructureMask:
    """A structure's voxels on a volume's grid: ``mask`` (bool, the crop of its bounding box) starts at voxel
    ``start`` (k, j, i). An empty structure has a mask of size 0."""

    structure: Structure
    start: tuple[int, int, int]
    mask: np.ndarray

    @property
    def voxels(self) -> int:
        return int(np.count_nonzero(self.mask))

    def volume_ml(self, volume: Volume) -> float:
        """The mask's voxel volume in mL: each voxel counts the slab of its slice (half-way to each neighbour)
        times its pixel area."""
        if self.mask.size == 0:
            return 0.0
        per_slice = np.count_nonzero(self.mask, axis=(1, 2))
        k0 = self.start[0]
        voxel_mm3 = slab_thickness_mm(volume)[k0 : k0 + len(per_slice)] * pixel_area_mm2(volume)
        return float(per_slice @ voxel_mm3) / 1000.0


def crop(structure: Structure, labels: np.ndarray) -> StructureMask:
    """The StructureMask of a full-grid boolean array ``labels`` (the bounding box of its True voxels)."""
    where = [np.flatnonzero(labels.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if any(len(w) == 0 for w in where):
        return StructureMask(structure, (0, 0, 0), np.zeros((0, 0, 0), dtype=bool))
    lo = tuple(int(w[0]) for w in where)
    hi = tuple(int(w[-1]) + 1 for w in where)
    return StructureMask(structure, lo, np.ascontiguousarray(labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]))


def slab_thickness_mm(volume: Volume) -> np.ndarray:
    """Each slice's thickness along the stack normal, (slices,) mm: half-way to each neighbour; the end slices
    as thick as their one neighbour is far (a single slice: its SliceThickness, else 1 mm)."""
    spacings = volume.slice_spacings
    if len(spacings) == 0:
        return np.array([float(volume.slice_thickness or 1.0)])
    padded = np.concatenate([[spacings[0]], spacings, [spacings[-1]]])
    return 0.5 * (padded[:-1] + padded[1:])


def pixel_area_mm2(volume: Volume) -> float:
    return float(volume.pixel_spacing[0] * volume.pixel_spacing[1])


def linear_rgba(color: tuple[int, int, int], alpha: float = 1.0) -> tuple[float, float, float, float]:
    """sRGB bytes -> linear RGBA (glTF baseColorFactor)."""
    c = np.asarray(color, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return (*(round(float(v), 6) for v in linear), float(alpha))  # type: ignore[return-value]


def hex_color(color: tuple[int, int, int]) -> str:
    """sRGB bytes -> "#rrggbb"."""
    return "#" + "".join(f"{int(c):02x}" for c in color)


def palette_color(n: int) -> tuple[int, int, int]:
    """The n-th colour (from 0) of the palette for structures that bring none."""
    return PALETTE[n % len(PALETTE)]


def cielab_to_srgb(lab: tuple[int, int, int]) -> tuple[int, int, int]:
    """DICOM's RecommendedDisplayCIELabValue (L*a*b* scaled to 0..65535) -> sRGB bytes, as highdicom converts
    it (through its ICC profiles)."""
    from highdicom.color import CIELabColor

    return tuple(int(c) for c in CIELabColor.from_dicom_value(tuple(int(v) for v in lab)).to_rgb())  # type: ignore[return-value]


def masks_npz(volume: Volume, masks: Sequence[StructureMask]) -> bytes:
    """The masks and the grid they lie on, as one .npz (bits packed): what a meshing job needs, without the
    segmentation files or the images. `read_masks_npz` reads it back."""
    arrays: dict[str, np.ndarray] = {
        "shape": np.asarray(volume.shape), "positions": volume.positions, "row": volume.row_direction,
        "column": volume.column_direction, "spacing": np.asarray(volume.pixel_spacing),
        "numbers": np.asarray([m.structure.number for m in masks]),
    }
    for n, m in enumerate(masks):
        arrays[f"start{n}"] = np.asarray(m.start)
        arrays[f"size{n}"] = np.asarray(m.mask.shape)
        arrays[f"bits{n}"] = np.packbits(m.mask.ravel())
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def read_masks_npz(data: bytes, structures: Sequence[Structure]) -> tuple[Volume, list[StructureMask]]:
    """The grid (a Volume whose voxels are a zero-cost placeholder of the right shape) and the masks of
    `masks_npz` bytes, each with the Structure of its number from ``structures``."""
    with np.load(io.BytesIO(data)) as npz:
        shape = tuple(int(v) for v in npz["shape"])
        grid = Volume(voxels=np.broadcast_to(np.zeros(1, np.uint8), shape), positions=npz["positions"],
                      row_direction=npz["row"], column_direction=npz["column"],
                      pixel_spacing=tuple(float(v) for v in npz["spacing"]), modality="SEG", units="")
        by_number = {s.number: s for s in structures}
        masks = []
        for n, number in enumerate(npz["numbers"].tolist()):
            size = tuple(int(v) for v in npz[f"size{n}"])
            bits = np.unpackbits(npz[f"bits{n}"], count=int(np.prod(size))).astype(bool).reshape(size)
            masks.append(StructureMask(by_number[number], tuple(int(v) for v in npz[f"start{n}"]), bits))
    return grid, masks

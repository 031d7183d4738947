"""Growing a structure from a seed: the connected part of an intensity band that contains a point.

A participant points at the anatomy (a point in LPS mm) and asks for a structure. The steps:

1. The seed's voxel: of the (up to) eight voxel centres around the point, the one in the band nearest to it. A
   point picked on a surface lies half-way between tissue and its surroundings, so the band decides which side
   is meant.
2. The band: ``low`` and ``high`` as given; by default the band of the preset under the seed, from the
   modality's preset levels (``presets``): between the highest level at or below the brightest of those eight
   voxels and the next level up (bone: from 300.5 HU up; vessels: 150.5 to 300.5 HU; ...). Below the lowest
   level (air, background) there is no default band.
3. The connected component (voxels sharing a face) of the band that contains the seed voxel. With
   ``max_radius_mm`` it must lie within that distance of the seed: a component that reaches farther (a band
   that leaked into the neighbouring anatomy) is refused, not cut.
4. Holes filled: pockets of other values enclosed by the component and smaller than it (vessels in an organ,
   noise), not the cavity a shell encloses when that is larger than the shell (the skull's).

Refusals are `GrowError`s with a sentence a participant can act on: a seed outside the volume, no default band,
a component larger than the radius allows, a component of one voxel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import ReconstructionError
from .presets import level_for, presets_for
from .structures import Structure, StructureMask
from .volume import Volume

_FACES = ndimage.generate_binary_structure(3, 1)
SKIN_SHARE = 0.2
"""A structure grown in a training room may outline at most this share of the body's surface (`skin_share`):
more, and it can show the patient's face."""


class GrowError(ReconstructionError):
    """A structure cannot be grown from this seed and band (the reason says why, for the participant)."""


@dataclass(frozen=True)
class Band:
    """The values [low, high] a grown structure takes (either may be infinite), and the preset they come from
    (None for a band the participant gave)."""

    low: float
    high: float
    preset: str | None = None


def seed_index(volume: Volume, seed_lps) -> np.ndarray:
    """The continuous voxel index (k, j, i) of an LPS point. Raises GrowError when it lies outside the volume
    (farther than half a voxel beyond its outer voxel centres)."""
    point = np.asarray(seed_lps, dtype=np.float64)
    distances = volume.positions @ volume.normal
    along = float(point @ volume.normal)
    n = len(distances)
    if n > 1:
        k = float(np.interp(along, distances, np.arange(n), left=np.nan, right=np.nan))
        if math.isnan(k):
            step = float(distances[1] - distances[0]) if along < distances[0] else float(distances[-1] - distances[-2])
            k = (along - distances[0]) / step if along < distances[0] else n - 1 + (along - distances[-1]) / step
    else:
        k = 0.0
    origin = volume.index_to_lps(np.array([[min(max(k, 0.0), n - 1), 0.0, 0.0]]))[0]
    delta = point - origin
    j = float(delta @ volume.column_direction) / volume.pixel_spacing[0]
    i = float(delta @ volume.row_direction) / volume.pixel_spacing[1]
    index = np.array([k, j, i])
    if np.any(index < -0.5) or np.any(index > np.array(volume.shape) - 0.5):
        raise GrowError("seed", "the seed lies outside the volume")
    return index


def default_band(volume: Volume, value: float) -> Band:
    """The band of the preset under a voxel of ``value`` (see the module docstring). Raises GrowError below the
    lowest level."""
    levels = sorted((level_for(preset, volume), name) for name, preset in presets_for(volume.modality).items())
    below = [(level, name) for level, name in levels if level <= value]
    if not below:
        raise GrowError("seed", f"the seed is in air or background ({value:g} {volume.units}, below every tissue "
                                "level): point at tissue, or give the band (low, high)")
    level, name = below[-1]
    above = [lv for lv, _ in levels if lv > level]
    return Band(level, above[0] if above else math.inf, name)


def grow_region(
    volume: Volume,
    seed_lps,
    *,
    name: str,
    color: tuple[int, int, int],
    low: float | None = None,
    high: float | None = None,
    max_radius_mm: float | None = None,
) -> tuple[StructureMask, Band]:
    """The structure grown from ``seed_lps`` (see the module docstring), as segment 1 named ``name``, and its
    band. Raises GrowError."""
    index = seed_index(volume, seed_lps)
    corners = _corners(volume, index)
    values = volume.voxels[tuple(corners.T)].astype(np.float64)
    if low is None and high is None:
        band = default_band(volume, float(values.max()))
    else:
        band = Band(-math.inf if low is None else float(low), math.inf if high is None else float(high))
    if band.low > band.high:
        raise GrowError("band", f"low {band.low:g} is above high {band.high:g}")
    inside = (values >= band.low) & (values <= band.high)
    if not inside.any():
        raise GrowError("seed", f"the voxels at the seed ({values.min():g} to {values.max():g} {volume.units}) are "
                                f"outside the band [{band.low:g}, {band.high:g}]")
    nearest = np.linalg.norm(corners - index, axis=1)
    seed = corners[np.flatnonzero(inside)[np.argmin(nearest[inside])]]
    lo, hi = _reach(volume, seed, max_radius_mm)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    crop = volume.voxels[box]
    in_band = crop >= band.low if band.high == math.inf else (crop >= band.low) & (crop <= band.high)
    labels, _ = ndimage.label(in_band, _FACES)
    component = labels == labels[tuple(seed - lo)]
    del labels, in_band
    voxels = int(np.count_nonzero(component))
    if voxels <= 1:
        raise GrowError("seed", "the component at the seed is a single voxel: widen the band")
    where = np.argwhere(component)
    if max_radius_mm is not None:
        farthest = _farthest_mm(volume, where + lo, seed_lps)
        if farthest > max_radius_mm:
            raise GrowError("seed", f"the component reaches {farthest:.0f} mm from the seed, more than max_radius_mm "
                                    f"{max_radius_mm:g}: narrow the band or allow a larger radius")
    first, last = where.min(axis=0), where.max(axis=0) + 1
    mask = _fill_holes(component[tuple(slice(a, b) for a, b in zip(first, last, strict=True))])
    start = tuple(int(v) for v in first + lo)
    return StructureMask(Structure(1, name, color), start, mask), band  # type: ignore[arg-type]


def skin_share(volume: Volume, mask: StructureMask, skin_level: float) -> float:
    """How much of the body's surface a structure outlines: of all tissue voxels with a face neighbour darker
    than ``skin_level`` (air) in the volume, the fraction that are the structure's. A structure grown from the
    soft tissue of a head outlines nearly all of it (and so shows the face); a skull, an organ or a vessel
    next to nothing."""
    air_next = ndimage.binary_dilation(volume.voxels < skin_level, _FACES)
    surface = air_next & (volume.voxels >= skin_level)
    total = int(np.count_nonzero(surface))
    if total == 0:
        return 0.0
    box = tuple(slice(s, s + n) for s, n in zip(mask.start, mask.mask.shape, strict=True))
    return float(np.count_nonzero(surface[box] & mask.mask)) / total


def _corners(volume: Volume, index: np.ndarray) -> np.ndarray:
    """The distinct voxel indices (M, 3) around a continuous index, inside the volume."""
    low = np.clip(np.floor(index), 0, np.array(volume.shape) - 1).astype(np.int64)
    high = np.clip(np.ceil(index), 0, np.array(volume.shape) - 1).astype(np.int64)
    corners = {(a, b, c) for a in (low[0], high[0]) for b in (low[1], high[1]) for c in (low[2], high[2])}
    return np.array(sorted(corners), dtype=np.int64)


def _reach(volume: Volume, seed: np.ndarray, max_radius_mm: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The crop [lo, hi) that holds every voxel within ``max_radius_mm`` of the seed voxel, plus one voxel all
    round (so that a component leaving the ball shows in it); the whole volume without a radius."""
    shape = np.array(volume.shape)
    if max_radius_mm is None:
        return np.zeros(3, dtype=np.int64), shape
    spacing = volume.slice_spacings
    dk = float(spacing.min()) if len(spacing) else 1.0
    steps = np.array([dk, volume.pixel_spacing[0], volume.pixel_spacing[1]])
    if len(spacing):  # a sheared stack moves in-plane from slice to slice too
        shear = np.linalg.norm(volume.positions[-1] - volume.positions[0]) / max(len(spacing), 1)
        steps[0] = min(dk, shear)
    reach = np.ceil(max_radius_mm / steps).astype(np.int64) + 2
    return np.maximum(seed - reach, 0), np.minimum(seed + reach + 1, shape)


def _farthest_mm(volume: Volume, voxels: np.ndarray, seed_lps) -> float:
    """The largest distance (mm) from the seed to these voxel centres (measured in chunks)."""
    point = np.asarray(seed_lps, dtype=np.float64)
    farthest = 0.0
    for start in range(0, len(voxels), 1_000_000):
        chunk = volume.index_to_lps(voxels[start:start + 1_000_000].astype(np.float64))
        farthest = max(farthest, float(np.linalg.norm(chunk - point, axis=1).max()))
    return farthest


def _fill_holes(component: np.ndarray) -> np.ndarray:
    """The component with its enclosed pockets filled, each only if smaller than the component itself."""
    padded = np.pad(component, 1)
    pockets, count = ndimage.label(~padded, _FACES)
    if count <= 1:
        return component
    sizes = np.bincount(pockets.ravel())
    outside = pockets[0, 0, 0]
    small = sizes < np.count_nonzero(component)
    small[0] = small[outside] = False
    filled = padded | small[pockets]
    return filled[1:-1, 1:-1, 1:-1]

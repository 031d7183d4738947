"""The body: what a skin surface encloses, so that the skin is the outer surface of the body and nothing else.

A threshold between air and tissue also separates tissue from every dark region inside the body: the airways,
sinuses and, on MR, bone, CSF and vessels. Marching cubes makes a surface around each of them, and those inner
layers show through a skin and cost triangles. On the sampling grid of the skin, the body is:

1. everything that is not outside: the background connected to the grid's in-plane edges, after the tissue has
   been closed over openings narrower than about ``2 * OPENING_MM`` (nostrils, mouth, ear canals, which
   connect the airways to the outside), and grown back into the openings' mouths by as much, so that the
   skin's own folds stay where the image puts them. The first and last planes, where the scan cuts the body,
   are not outside: a cut through the neck is capped, not followed into the airway.
2. of that, the largest connected part (the patient, not the table, head holder, markers or noise).

`fill_body` then raises the samples of the body's dark interior above the level and lowers those of tissue
outside the body below it: the iso-surface that is left is the body's outer boundary, and where that boundary
is real tissue the samples are the image's own, so the surface sits exactly where it did.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

OPENING_MM = 5.0
"""Openings up to about twice this wide are sealed; folds up to this deep keep their shape."""

OUTSIDE_FRACTION = 0.05
"""Background parts at the in-plane edges smaller than this fraction of the largest are inside the body."""

_SIX_NEIGHBOURS = ndimage.generate_binary_structure(3, 1)


def fill_body(samples: np.ndarray, level: float, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """The (k, j, i) samples of a padded sampling grid with the body filled and everything else emptied, so
    that only the body's outer surface crosses ``level``. ``spacing_mm`` is the grid's sample spacing.

    Requires samples padded with one plane below the level on every side (as `SamplingGrid` makes them).
    """
    tissue = samples > level
    body = body_mask(tissue, spacing_mm)
    out = samples.copy()
    span = max(float(np.max(samples)) - level, abs(level), 1.0)
    out[body & ~tissue] = level + span
    out[~body & tissue] = level - span
    return out


def body_mask(tissue: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """The body (see the module docstring) of a padded (k, j, i) tissue mask; False on the padding.

    The body is found on a grid twice as coarse in-plane (a coarse sample is tissue if any of its four is),
    where it costs a quarter, and then fitted to the fine samples: the outside grows back through the fine
    background by as much as a coarse sample.
    """
    inner = tissue[1:-1]  # the padding planes along k stay outside
    coarse = _any_in_pairs(_any_in_pairs(inner, 1), 2)
    coarse_spacing = (spacing_mm[0], 2 * spacing_mm[1], 2 * spacing_mm[2])
    reach = [max(1, round(OPENING_MM / s)) if s > 0 else 1 for s in coarse_spacing]
    outside = _connected_to_in_plane_edges(~_closing(coarse, reach))
    # Grow the outside back into the sealed openings, through background only, so that folds keep their shape.
    outside = _grow(outside, max(reach), ~coarse)
    labels, count = ndimage.label(~outside, _SIX_NEIGHBOURS)
    body = np.zeros(tissue.shape, dtype=bool)
    if count == 0:
        return body
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest = _fine(labels == int(np.argmax(sizes)), inner.shape)
    outside = _grow(_fine(outside, inner.shape), 2, ~inner)
    body[1:-1] = largest & ~outside
    # The padding all round stays below the level, or the surface would run into the grid's edge, open.
    body[:, [0, -1], :] = False
    body[:, :, [0, -1]] = False
    return body


def _any_in_pairs(mask: np.ndarray, axis: int) -> np.ndarray:
    """``mask`` halved along ``axis``: True where either of two neighbours is (an odd last one stays alone)."""
    n = mask.shape[axis]
    even = mask.take(np.arange(0, n - 1, 2), axis=axis) | mask.take(np.arange(1, n, 2), axis=axis)
    if n % 2:
        even = np.concatenate([even, mask.take([n - 1], axis=axis)], axis=axis)
    return even


def _fine(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A coarse mask back on the fine grid of ``shape`` (each coarse sample covers two along j and i)."""
    return coarse.repeat(2, axis=1).repeat(2, axis=2)[:, : shape[1], : shape[2]]


def _grow(region: np.ndarray, steps: int, through: np.ndarray) -> np.ndarray:
    """``region`` grown by ``steps`` six-neighbour steps, only into ``through`` (array shifts: several times
    faster than ndimage's iterated dilation)."""
    grown = region.copy()
    for _ in range(steps):
        step = grown.copy()
        for axis in range(grown.ndim):
            ahead = [slice(None)] * grown.ndim
            behind = [slice(None)] * grown.ndim
            ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
            step[tuple(ahead)] |= grown[tuple(behind)]
            step[tuple(behind)] |= grown[tuple(ahead)]
        grown = step & through | region
    return grown


def _closing(mask: np.ndarray, reach: list[int]) -> np.ndarray:
    """Morphological closing with a box of 2 * reach + 1 samples along each axis (separable, so it is cheap:
    one running OR, then one running AND, of shifted copies per axis).

    Outside the array counts as background, so that nothing is sealed against the grid's edge.
    """
    pad = [(r, r) for r in reach]
    grown = np.pad(mask, pad)
    for axis, r in enumerate(reach):
        grown = _box(grown, axis, r, np.logical_or)
    for axis, r in enumerate(reach):
        grown = _box(grown, axis, r, np.logical_and)
    return grown[tuple(slice(r, -r) for r in reach)]


def _box(mask: np.ndarray, axis: int, r: int, combine) -> np.ndarray:
    """``combine`` (logical or: dilation; and: erosion) of ``mask`` over a window of 2 * r + 1 along ``axis``;
    beyond the array's ends the window holds only what is inside it."""
    out = mask.copy()
    n = mask.shape[axis]
    for shift in range(1, r + 1):
        if shift >= n:
            break
        ahead = [slice(None)] * mask.ndim
        behind = [slice(None)] * mask.ndim
        ahead[axis], behind[axis] = slice(shift, None), slice(None, n - shift)
        combine(out[tuple(ahead)], mask[tuple(behind)], out=out[tuple(ahead)])
        combine(out[tuple(behind)], mask[tuple(ahead)], out=out[tuple(behind)])
    return out


def _connected_to_in_plane_edges(background: np.ndarray) -> np.ndarray:
    """The background that reaches the in-plane edges in parts of at least OUTSIDE_FRACTION of the largest
    such part (a sinus cut by the field of view touches the edge too, but is not the outside)."""
    labels, count = ndimage.label(background, _SIX_NEIGHBOURS)
    touching = np.zeros(count + 1, dtype=bool)
    for edge in (labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]):
        touching[edge] = True
    touching[0] = False
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    if touching.any():
        touching &= sizes >= OUTSIDE_FRACTION * sizes[touching].max()
    return touching[labels]

"""Window/level: how a slice's values become grey levels, and the presets a surgeon picks from.

A window of width W centred on level L maps L - W/2 (and below) to black and L + W/2 (and above) to white,
linearly in between. CT presets are the radiologists' usual Hounsfield windows. MR has no absolute scale, so
its presets come from the image: percentiles of a strided sample of the voxels (about a million, as the MR
surface levels in presets.py), either of every voxel or of the body's alone (the voxels above Otsu's threshold,
which separates the background air from the body).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .presets import LEVEL_SAMPLE_VOXELS
from .volume import Volume


@dataclass(frozen=True)
class Window:
    """A named window: `width` and `level` in the image's units (HU for CT)."""

    name: str
    width: float
    level: float

    def to_json(self) -> dict:
        return {"name": self.name, "window": self.width, "level": self.level}


CT_WINDOWS = (
    Window("bone", 1800.0, 400.0),
    Window("brain", 80.0, 40.0),
    Window("soft tissue", 400.0, 40.0),
    Window("lung", 1500.0, -600.0),
)

MR_PERCENTILES = (
    # name, low and high percentile, of the body's voxels only (else of every voxel)
    ("tissue", 1.0, 99.0, True),
    ("full range", 0.5, 99.9, False),
)


def windows_for(volume: Volume) -> tuple[Window, ...]:
    """The presets for `volume`, the first being the default: CT_WINDOWS for CT, else from MR_PERCENTILES.

    Requires a non-empty volume. A uniform image gets one window of width 1 around its value.
    """
    if volume.modality.upper() == "CT":
        return CT_WINDOWS
    from skimage.filters import threshold_otsu  # scikit-image's filters load in 0.2 s: only MR needs them

    step = max(1, math.ceil((volume.voxels.size / LEVEL_SAMPLE_VOXELS) ** (1 / 3)))
    sample = np.ascontiguousarray(volume.voxels[::step, ::step, ::step], dtype=np.float64).ravel()
    if sample.min() == sample.max():
        return (Window("image", 1.0, float(sample[0])),)
    body = sample[sample > threshold_otsu(sample)]
    windows = []
    for name, low, high, body_only in MR_PERCENTILES:
        values = body if body_only and body.size else sample
        lo, hi = np.percentile(values, [low, high])
        windows.append(Window(name, max(1.0, round(float(hi - lo), 1)), round(float(hi + lo) / 2, 1)))
    return tuple(windows)


def to_grey(image: np.ndarray, width: float, level: float) -> np.ndarray:
    """`image` through the window: uint8 grey levels, 0 at level - width/2 and below, 255 at level + width/2.

    Requires width > 0.
    """
    scale = 255.0 / width
    grey = image - np.float32(level - width / 2)
    grey *= np.float32(scale)
    np.clip(grey, 0.0, 255.0, out=grey)
    grey += np.float32(0.5)
    return grey.astype(np.uint8)

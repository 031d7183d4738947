"""Tissue presets: the iso-level, colour and material of each surface, and the level for a given volume.

CT levels are fixed Hounsfield values; each sits half-way across the edge it outlines, so the iso-surface lies
at the half-maximum of the partial-volume ramp, where the boundary really is:

- ``bone`` 300.5 HU: above soft tissue (< 100 HU) and most contrast-enhanced blood (150-250 HU), below
  cortical bone (> 700 HU) and within cancellous bone (200-700 HU), so the skull's diploë stays inside.
- ``skin`` -500.5 HU: half-way between air (-1000 HU) and subcutaneous fat/skin (-100..+40 HU).
- ``soft-tissue`` -20.5 HU: half-way between fat (about -100 HU) and muscle/parenchyma (+40..+60 HU). A
  level at the muscle mean (40 HU) would cut through the tissue's own noise instead of its edge with fat.
- ``vessels`` 150.5 HU: contrast-enhanced blood (about 180-400 HU) against enhancing parenchyma (< 130 HU).
  A threshold cannot tell contrast from bone: the surface includes bone too.

The levels are not integers on purpose: on integer data an integer level meets voxels exactly at the level and
marching cubes emits thousands of zero-area triangles there, which decimators keep.

MR has no absolute scale, so MR levels come from the image itself, computed with scikit-image on a strided
sample of the voxels (every second voxel along each axis, or sparser, so that about a million are sampled):

- ``skin`` Otsu's threshold (``threshold_otsu``): the two-class split of MR is background air against body.
- ``bright`` the upper threshold of a three-class Otsu (``threshold_multiotsu``): the brightest class, e.g.
  fat on T1, fluid on T2, flowing blood in an angiogram.

Colours are linear RGBA (glTF ``baseColorFactor``); the sRGB values they come from are in the comments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import SurfaceError
from .volume import Volume

LEVEL_SAMPLE_VOXELS = 1_000_000
"""About how many voxels an image-derived level is computed from (more changes it by less than a unit)."""


@dataclass(frozen=True)
class Preset:
    """One tissue surface: how its level is found, and how it looks in glTF.

    ``level`` is the iso-level in the volume's units when ``method`` is "fixed" (CT HU); otherwise ``method``
    names how the level is derived from the image ("otsu", "multiotsu-upper"). ``keep_largest`` keeps only
    that many largest connected surfaces (None keeps all of them). ``outer``: the surface is the outer
    boundary of the body, without the inner layers the level also outlines (``body``).
    """

    name: str
    method: str
    level: float | None
    color: tuple[float, float, float, float]
    roughness: float
    metallic: float = 0.0
    keep_largest: int | None = None
    outer: bool = False

    @property
    def alpha_mode(self) -> str:
        """glTF material alphaMode: "BLEND" when the colour is translucent, else "OPAQUE"."""
        return "BLEND" if self.color[3] < 1.0 else "OPAQUE"


# sRGB (0.89, 0.85, 0.78): ivory.
_BONE_RGBA = (0.768, 0.694, 0.571, 1.0)
# sRGB (0.94, 0.76, 0.66): light skin. On CT translucent, so that the bone made with it shows through; on MR
# opaque: the skin is the only default MR surface, and nothing meshed lies inside it.
_SKIN_RGBA = (0.871, 0.539, 0.392, 0.45)
_OPAQUE_SKIN_RGBA = (*_SKIN_RGBA[:3], 1.0)
# sRGB (0.75, 0.36, 0.32): muscle red.
_SOFT_TISSUE_RGBA = (0.522, 0.107, 0.084, 1.0)
# sRGB (0.80, 0.10, 0.12): arterial red.
_VESSEL_RGBA = (0.604, 0.010, 0.013, 1.0)

CT_PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("bone", "fixed", 300.5, _BONE_RGBA, roughness=0.65),
        # The body is one component; dropping the others removes the table, head rest and cables.
        Preset("skin", "fixed", -500.5, _SKIN_RGBA, roughness=0.5, keep_largest=1, outer=True),
        Preset("soft-tissue", "fixed", -20.5, _SOFT_TISSUE_RGBA, roughness=0.5),
        Preset("vessels", "fixed", 150.5, _VESSEL_RGBA, roughness=0.35),
    )
}

MR_PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("skin", "otsu", None, _OPAQUE_SKIN_RGBA, roughness=0.5, keep_largest=1, outer=True),
        Preset("bright", "multiotsu-upper", None, _SOFT_TISSUE_RGBA, roughness=0.5),
    )
}

_DEFAULT_NAMES = {"CT": ["bone", "skin"], "MR": ["skin"]}


def presets_for(modality: str) -> dict[str, Preset]:
    """The preset table for a modality: CT's HU table for CT, the image-derived table for anything else."""
    return CT_PRESETS if modality.upper() == "CT" else MR_PRESETS


def preset_names_for(modality: str) -> list[str]:
    """The presets reconstructed when the caller names none."""
    return list(_DEFAULT_NAMES["CT" if modality.upper() == "CT" else "MR"])


def preset_for(name: str, modality: str) -> Preset:
    """Look a preset up by name for a modality. Raises SurfaceError for an unknown name."""
    table = presets_for(modality)
    try:
        return table[name]
    except KeyError:
        known = ", ".join(table)
        raise SurfaceError(f"{modality} presets", f"unknown preset {name!r} (known: {known})") from None


def level_for(preset: Preset, volume: Volume) -> float:
    """The iso-level of ``preset`` on ``volume``, in the volume's units.

    Requires a non-empty volume. Image-derived levels on integer data are moved to the nearest half-integer,
    for the same reason the CT levels are not integers.
    """
    if preset.method == "fixed":
        assert preset.level is not None
        return float(preset.level)
    # Imported here: scikit-image's filters load scipy.ndimage (0.2 s); only image-derived levels need them.
    from skimage.filters import threshold_multiotsu, threshold_otsu

    step = max(2, math.ceil((volume.voxels.size / LEVEL_SAMPLE_VOXELS) ** (1 / 3)))
    sample = np.ascontiguousarray(volume.voxels[::step, ::step, ::step])
    if sample.size == 0 or sample.min() == sample.max():
        raise SurfaceError(preset.name, "the image is uniform: no level separates tissue from background")
    if preset.method == "otsu":
        level = float(threshold_otsu(sample))
    elif preset.method == "multiotsu-upper":
        level = float(threshold_multiotsu(sample, classes=3)[-1])
    else:
        raise SurfaceError(preset.name, f"unknown level method {preset.method!r}")
    if np.issubdtype(volume.voxels.dtype, np.integer):
        level = float(np.floor(level)) + 0.5
    return level

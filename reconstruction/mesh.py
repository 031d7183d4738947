"""Mesh: a triangle surface in patient LPS millimetres, as surfaces produce it and the GLB writer takes it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class Mesh:
    """A triangle mesh for one tissue preset.

    ``vertices``: (V, 3) float32 LPS mm. ``faces``: (F, 3) uint32, counter-clockwise seen from outside
    (the tissue side is inside). ``normals``: (V, 3) float32 unit vertex normals pointing outward, in LPS.
    How it was made, besides its preset and level: ``keep_largest``, how many of the largest connected surfaces
    were kept (None: all); ``slice_smoothing``, whether the terraces of thick slices were smoothed away.
    A named structure (a segment of a segmentation) also has its ``name``, its own ``color`` (linear RGBA) and
    ``extras`` for its GLB node (segment number, codes); a tissue preset's name and colour are the preset's.
    """

    preset: str
    threshold: float
    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    keep_largest: int | None = None
    slice_smoothing: bool = False
    name: str = ""
    color: tuple[float, float, float, float] | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def triangles(self) -> int:
        return int(self.faces.shape[0])

    def bbox_lps_mm(self) -> list[list[float]]:
        """[[xmin, ymin, zmin], [xmax, ymax, zmax]]; zeros for an empty mesh."""
        if len(self.vertices) == 0:
            return [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
        return [self.vertices.min(axis=0).tolist(), self.vertices.max(axis=0).tolist()]

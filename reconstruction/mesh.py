"""Mesh: a triangle surface in patient LPS millimetres, as surfaces produce it and the GLB writer takes it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Mesh:
    """A triangle mesh for one tissue preset.

    ``vertices``: (V, 3) float32 LPS mm. ``faces``: (F, 3) uint32, counter-clockwise seen from outside
    (the tissue side is inside). ``normals``: (V, 3) float32 unit vertex normals pointing outward, in LPS.
    """

    preset: str
    threshold: float
    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray

    @property
    def triangles(self) -> int:
        return int(self.faces.shape[0])

    def bbox_lps_mm(self) -> list[list[float]]:
        """[[xmin, ymin, zmin], [xmax, ymax, zmax]]; zeros for an empty mesh."""
        if len(self.vertices) == 0:
            return [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
        return [self.vertices.min(axis=0).tolist(), self.vertices.max(axis=0).tolist()]

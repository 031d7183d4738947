"""Quadric edge-collapse decimation to a triangle budget (fast_simplification), and mesh clean-up after it."""

from __future__ import annotations

import fast_simplification
import numpy as np


def decimate(vertices: np.ndarray, faces: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Collapse edges by least quadric error until at most about ``target`` faces remain.

    Requires 0 < target < len(faces). Returns float64 vertices and int64 faces without degenerate faces or
    unused vertices.
    """
    points, triangles = fast_simplification.simplify(
        np.ascontiguousarray(vertices, dtype=np.float64),
        np.ascontiguousarray(faces, dtype=np.int32),
        target_count=int(target),
    )
    return compact(points, triangles.astype(np.int64))


def compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop faces that repeat a vertex and vertices no face uses; renumber faces."""
    good = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    faces = faces[good]
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.ravel()] = True
    renumber = np.cumsum(used) - 1
    return vertices[used], renumber[faces]

"""Quadric edge-collapse decimation to a triangle budget (fast_simplification), and mesh clean-up after it.

An edge collapse can pinch two nearby sheets of a surface together (two walls of a thin bone, say) so that
four faces share one edge. Such a mesh is not a closed manifold any more, which 3D printing and volume
measurements need; the clean-up gives each sheet its own copy of the pinched vertices again.
"""

from __future__ import annotations

import fast_simplification
import numpy as np


def decimate(vertices: np.ndarray, faces: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Collapse edges by least quadric error until at most about ``target`` faces remain.

    Requires 0 < target < len(faces). Returns float64 vertices and int64 faces without degenerate faces,
    unused vertices or edges shared by more than two faces.
    """
    points, triangles = fast_simplification.simplify(
        np.ascontiguousarray(vertices, dtype=np.float64),
        np.ascontiguousarray(faces, dtype=np.int32),
        target_count=int(target),
    )
    return split_pinched_edges(*compact(points, triangles.astype(np.int64)))


def compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop faces that repeat a vertex and vertices no face uses; renumber faces."""
    good = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    faces = faces[good]
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.ravel()] = True
    renumber = np.cumsum(used) - 1
    return vertices[used], renumber[faces]


def split_pinched_edges(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Give every sheet that meets others along an edge (more than two faces on it) its own copies of the
    edge's vertices. A sheet around a vertex is a fan of faces joined by edges that only two faces share.

    Requires faces without repeated vertices. Returns the vertices (copies appended) and the renumbered faces.
    """
    edge_keys, edge_counts = _edge_counts(faces, len(vertices))
    pinched = edge_keys[edge_counts > 2]
    if len(pinched) == 0:
        return vertices, faces
    manifold = set(edge_keys[edge_counts == 2].tolist())
    corners = faces.ravel()
    order = np.argsort(corners, kind="stable")
    starts = np.searchsorted(corners[order], np.arange(len(vertices) + 1))
    faces = faces.copy()
    copies: list[int] = []
    for vertex in np.unique(np.concatenate([pinched // len(vertices), pinched % len(vertices)])).tolist():
        fan = order[starts[vertex] : starts[vertex + 1]] // 3
        for sheet in _sheets(faces, fan, vertex, manifold, len(vertices))[1:]:
            rows = faces[sheet]
            rows[rows == vertex] = len(vertices) + len(copies)
            faces[sheet] = rows
            copies.append(vertex)
    return np.concatenate([vertices, vertices[copies]]), faces


def _edge_counts(faces: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each undirected edge as the key min * n + max, with the number of faces that have it."""
    a = faces.ravel()
    b = faces[:, [1, 2, 0]].ravel()
    keys = np.minimum(a, b) * n + np.maximum(a, b)
    return np.unique(keys, return_counts=True)


def _sheets(faces: np.ndarray, fan: np.ndarray, vertex: int, manifold: set[int], n: int) -> list[np.ndarray]:
    """The faces around ``vertex`` grouped into fans joined by manifold edges, largest first."""
    by_edge: dict[int, list[int]] = {}
    for face in fan.tolist():
        for other in faces[face].tolist():
            if other != vertex:
                key = min(vertex, other) * n + max(vertex, other)
                if key in manifold:
                    by_edge.setdefault(key, []).append(face)
    parent = {face: face for face in fan.tolist()}

    def root(face: int) -> int:
        while parent[face] != face:
            parent[face] = parent[parent[face]]
            face = parent[face]
        return face

    for pair in by_edge.values():
        parent[root(pair[0])] = root(pair[-1])
    groups: dict[int, list[int]] = {}
    for face in fan.tolist():
        groups.setdefault(root(face), []).append(face)
    return sorted((np.array(g) for g in groups.values()), key=len, reverse=True)

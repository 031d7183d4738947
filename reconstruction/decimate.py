"""Quadric edge-collapse decimation to a triangle budget (fast_simplification), and mesh clean-up after it.

An edge collapse can pinch two nearby sheets of a surface together (two walls of a thin bone, say) so that
four faces share one edge. Such a mesh is not a closed manifold any more, which 3D printing and volume
measurements need; the clean-up gives each sheet its own copy of the pinched vertices again.
"""

from __future__ import annotations

import fast_simplification
import numpy as np

# fast_simplification's threshold growth per pass (its default is 7). 9 decimates a marching-cubes skull 20-25 %
# faster with the same distance to the full-resolution surface and a 5th-percentile smallest angle of 19°
# instead of 20° (measured with bench/reconstruct.py on its head phantom).
AGGRESSIVENESS = 9.0


def decimate(vertices: np.ndarray, faces: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Collapse edges by least quadric error until at most about ``target`` faces remain.

    Requires 0 < target < len(faces). Returns float64 vertices and int64 faces without degenerate faces,
    unused vertices or edges shared by more than two faces.
    """
    points, triangles = fast_simplification.simplify(
        np.ascontiguousarray(vertices, dtype=np.float64),
        np.ascontiguousarray(faces, dtype=np.int32),
        target_count=int(target),
        agg=AGGRESSIVENESS,
    )
    return split_pinched_edges(*compact(points, triangles.astype(np.int64)))


def compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop faces that repeat a vertex, fins (two faces on the same three vertices, back to back: a pocket of
    no volume) and vertices no face uses; renumber faces."""
    good = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    faces = faces[good]
    return drop_unused_vertices(vertices, faces[~_fins(faces)])


def drop_unused_vertices(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vertices some face uses, and the faces renumbered to them."""
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.ravel()] = True
    renumber = np.cumsum(used) - 1
    return vertices[used], renumber[faces]


def _fins(faces: np.ndarray) -> np.ndarray:
    """Flags the faces that share their three vertices with a face of the opposite winding."""
    ordered = np.sort(faces, axis=1)
    n = int(faces.max()) + 1 if len(faces) else 1
    if n < 2**21:  # one int64 key per face: far faster than np.unique over rows
        keys = (ordered[:, 0] * n + ordered[:, 1]) * n + ordered[:, 2]
        _, group, counts = np.unique(keys, return_inverse=True, return_counts=True)
    else:
        _, group, counts = np.unique(ordered, axis=0, return_inverse=True, return_counts=True)
    shared = counts[group] == 2
    if not shared.any():
        return shared
    # The winding is even when the face is a rotation of its sorted vertices.
    even = (faces == ordered).all(axis=1) | (faces == np.roll(ordered, 1, axis=1)).all(axis=1)
    even = even | (faces == np.roll(ordered, 2, axis=1)).all(axis=1)
    winding = np.where(even, 1, -1)
    balance = np.zeros(len(counts), dtype=np.int64)
    np.add.at(balance, group[shared], winding[shared])
    return shared & (balance[group] == 0)


def split_pinched_edges(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Give every sheet that meets others along an edge (four faces on it) its own copies of the edge's
    vertices, so that every edge joins two faces again.

    The faces on a pinched edge are paired, each face crossing the edge one way with one crossing it the other
    way (the same pairing seen from both ends); a sheet around a vertex is then a ring of faces, each followed
    by the face across its outgoing edge. Only one of the two possible pairings separates the sheets, so edges
    still pinched after the first try are tried again with the other. Requires consistently wound faces
    without repeated vertices. Returns the vertices (copies appended) and the renumbered faces.
    """
    n = len(vertices)
    keys, counts = _edge_counts(faces, n)
    pinched = keys[counts > 2]
    if len(pinched) == 0:
        return vertices, faces
    other_pairing: set[int] = set()
    for _ in range(2):
        copies, out = _split_sheets(faces, pinched, other_pairing, n)
        origin = np.concatenate([np.arange(n), copies]).astype(np.int64)
        keys, counts = _edge_counts(out, len(origin))
        a, b = origin[keys[counts > 2] // len(origin)], origin[keys[counts > 2] % len(origin)]
        still = set((np.minimum(a, b) * n + np.maximum(a, b)).tolist())
        if not still or still <= other_pairing:
            break
        other_pairing |= still
    return np.concatenate([vertices, vertices[copies]]), out


def _split_sheets(
    faces: np.ndarray, pinched: np.ndarray, other_pairing: set[int], n: int
) -> tuple[np.ndarray, np.ndarray]:
    """One try of split_pinched_edges: the original vertex of each copy, and the renumbered faces."""
    across = _pairs_across(faces, pinched, other_pairing, n)
    corners = faces.ravel()
    order = np.argsort(corners, kind="stable")
    starts = np.searchsorted(corners[order], np.arange(n + 1))
    out = faces.copy()
    copies: list[int] = []
    for vertex in np.unique(np.concatenate([pinched // n, pinched % n])).tolist():
        fan = order[starts[vertex] : starts[vertex + 1]] // 3
        for sheet in _rings(faces, fan, vertex, across, n)[1:]:
            rows = out[sheet]
            rows[rows == vertex] = n + len(copies)
            out[sheet] = rows
            copies.append(vertex)
    return np.array(copies, dtype=np.int64), out


def _edge_counts(faces: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each undirected edge as the key min * n + max, with the number of faces that have it."""
    a = faces.ravel()
    b = faces[:, [1, 2, 0]].ravel()
    return np.unique(np.minimum(a, b) * n + np.maximum(a, b), return_counts=True)


def _pairs_across(
    faces: np.ndarray, pinched: np.ndarray, other_pairing: set[int], n: int
) -> dict[tuple[int, int], int]:
    """For each face on a pinched edge, the face it is paired with across that edge: (face, edge key) -> face.
    Faces pair in index order, or in opposite orders for the edges in ``other_pairing``."""
    a = faces.ravel()
    b = faces[:, [1, 2, 0]].ravel()
    keys = np.minimum(a, b) * n + np.maximum(a, b)
    on = np.flatnonzero(np.isin(keys, pinched))
    forward: dict[int, list[int]] = {}
    backward: dict[int, list[int]] = {}
    for half_edge in on.tolist():
        side = forward if a[half_edge] < b[half_edge] else backward
        side.setdefault(int(keys[half_edge]), []).append(half_edge // 3)
    pairs: dict[tuple[int, int], int] = {}
    for key, ones in forward.items():
        others = sorted(backward.get(key, []), reverse=key in other_pairing)
        for one, other in zip(sorted(ones), others, strict=False):
            pairs[(one, key)] = other
            pairs[(other, key)] = one
    return pairs


def _rings(
    faces: np.ndarray, fan: np.ndarray, vertex: int, across: dict[tuple[int, int], int], n: int
) -> list[np.ndarray]:
    """The faces around ``vertex`` grouped into rings (each face joined to the face across its outgoing edge
    from the vertex), largest first."""
    outgoing: dict[int, int] = {}
    incoming: dict[int, list[int]] = {}
    for face in fan.tolist():
        row = faces[face].tolist()
        at = row.index(vertex)
        after, before = row[(at + 1) % 3], row[(at + 2) % 3]
        outgoing[face] = min(vertex, after) * n + max(vertex, after)
        incoming.setdefault(min(vertex, before) * n + max(vertex, before), []).append(face)
    parent = {face: face for face in outgoing}

    def root(face: int) -> int:
        while parent[face] != face:
            parent[face] = parent[parent[face]]
            face = parent[face]
        return face

    for face, key in outgoing.items():
        following = across.get((face, key))
        if following is None and len(incoming.get(key, [])) == 1:
            following = incoming[key][0]
        if following is not None and following in parent:
            parent[root(face)] = root(following)
    groups: dict[int, list[int]] = {}
    for face in outgoing:
        groups.setdefault(root(face), []).append(face)
    return sorted((np.array(g) for g in groups.values()), key=len, reverse=True)

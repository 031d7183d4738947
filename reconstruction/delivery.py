"""The delivery variants of one mesh: full and coarse level of detail, each plain and Draco-compressed.

A headset first fetches the coarse level (at most ``COARSE_TRIANGLES``) for a fast first picture, then the
full mesh. Draco is the default for clients; the plain GLB is kept for tools that cannot decode Draco.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from .decimate import decimate
from .draco import DEFAULT_MAX_ERROR_MM, draco_glb
from .gltf import glb_bytes
from .mesh import Mesh
from .surface import vertex_normals
from .volume import Volume

COARSE_TRIANGLES = 30_000
MIN_COARSE_SHARE = 200


def coarse_mesh(mesh: Mesh, budget: int = COARSE_TRIANGLES) -> Mesh:
    """``mesh`` decimated to at most ``budget`` triangles (itself when already that small). Requires budget > 0."""
    if mesh.triangles <= budget:
        return mesh
    vertices, faces = decimate(mesh.vertices, mesh.faces, budget)
    return replace(
        mesh,
        vertices=vertices.astype(np.float32),
        faces=faces.astype(np.uint32),
        normals=vertex_normals(vertices, faces),
    )


def mesh_artifacts(
    meshes: Mesh | Sequence[Mesh], volume: Volume, *, title: str = "", max_error_mm: float = DEFAULT_MAX_ERROR_MM
) -> dict[str, bytes]:
    """GLB bytes by kind: ``full``, ``lod0`` (coarse), ``draco`` and ``draco_lod0``, of one mesh (a tissue
    preset) or several in one file (a segmentation's structures: the coarse level shares COARSE_TRIANGLES
    among them by their triangles, each keeping at least a little of its shape)."""
    meshes = [meshes] if isinstance(meshes, Mesh) else list(meshes)
    total = sum(m.triangles for m in meshes) or 1
    coarse = [coarse_mesh(m, max(MIN_COARSE_SHARE, COARSE_TRIANGLES * m.triangles // total)) for m in meshes]
    extras = {"title": title} if title else {}
    full = glb_bytes(meshes, volume=volume, extras={**extras, "lod": "full"})
    lod0 = glb_bytes(coarse, volume=volume, extras={**extras, "lod": 0})
    return {
        "full": full,
        "lod0": lod0,
        "draco": draco_glb(full, max_error_mm=max_error_mm),
        "draco_lod0": draco_glb(lod0, max_error_mm=max_error_mm),
    }

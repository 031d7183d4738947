"""Mesh provenance: what a room's log records about every mesh it shows (the `mesh.provenance` event).

For each mesh, from the catalog: its id, series (pseudonymous) and preset; `inputs`, the SHA-256 over the content
hashes of the instances it was built from (the series' `input_hash`: SHA-256 of the sorted lowercase hex SHA-256s
of the stored DICOM files, joined by "\\n"); the reconstruction parameters (iso-level, target triangles, largest
only, slice smoothing, gaps allowed) and the code version; and `glb`, the SHA-256 of every GLB variant the
server serves for it (`draco`, `draco_lod0`, `full`, `lod0`: the artifacts' content addresses). A GLB swapped
on disk after the room opened no longer hashes to its provenance leaf (`theatrum verify --glb`).
docs/ledger.md section 7 describes the event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from server.services.errors import NotFound
from server.storage.catalog import Catalog

PARAMETERS = ("target_triangles", "largest_only", "slice_smoothing", "allow_gaps", "version")


def mesh_provenance(catalog: Catalog, mesh_ids: Iterable[str]) -> dict[str, Any]:
    """The data of the mesh.provenance event for `mesh_ids` (in that order): {"meshes": [...]}. A value the
    catalog does not know (a mesh built before parameters were recorded) is null. Raises NotFound."""
    meshes = []
    for mesh_id in mesh_ids:
        mesh = catalog.mesh(mesh_id)
        if mesh is None:
            raise NotFound("not_found", f"no mesh {mesh_id!r}")
        series = catalog.series(mesh["series_id"])
        params = mesh.get("params") or {}
        meshes.append({
            "mesh": mesh["id"],
            "series": mesh["series_id"],
            "preset": mesh["preset"],
            "threshold": float(mesh["threshold"]),
            **{name: params.get(name) for name in PARAMETERS},
            "inputs": series["input_hash"] if series is not None else None,
            "glb": dict(sorted(mesh["artifacts"].items())),
        })
    return {"meshes": meshes}

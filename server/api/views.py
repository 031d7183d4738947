"""What the API shows of catalog rows: de-identified views (pseudonymous ids, modality, descriptions,
dimensions and spacing). The socket `job` events carry the same job view.
"""

from __future__ import annotations

from server.services.imports import segmentation_view
from server.storage.catalog import Catalog


def series_view(row: dict) -> dict:
    """A series as listings show it, with what its reconstruction warns of (uneven spacing, gaps allowed,
    dropped duplicates: the volume's warnings, which name no patient)."""
    return {**{key: row[key] for key in ("id", "modality", "description", "slices", "rows", "columns", "spacing_mm")},
            "warnings": list(row.get("warnings") or [])}


def mesh_view(row: dict, catalog: Catalog) -> dict:
    """A mesh as listings show it, with the warnings of the series it was built from."""
    series = catalog.series(row["series_id"]) if row.get("series_id") else None
    view = {key: row[key] for key in ("id", "study_id", "series_id", "preset", "threshold", "triangles", "vertices",
                                      "bbox_lps_mm")}
    if row.get("segmentation_id"):
        view["segmentation_id"] = row["segmentation_id"]
    return {**view, "warnings": list(series["warnings"]) if series else [], "url": f"/api/meshes/{row['id']}.glb"}


def job_view(job: dict) -> dict:
    keys = ("id", "study_id", "series_id", "state", "stage", "percent", "error", "mesh_ids",
            "created_at", "started_at", "finished_at")
    return {**{k: job.get(k) for k in keys}, "params": job["params"]}


def study_view(catalog: Catalog, row: dict, *, detail: bool) -> dict:
    view = {
        "id": row["id"],
        "description": row["description"],
        "modalities": [m for m in row["modalities"].split("\\") if m],
        "created_at": row["created_at"],
        "instances": catalog.instance_count(row["id"]),
        "series": [series_view(s) for s in catalog.series_of(row["id"])],
        "segmentations": [segmentation_view(s) for s in catalog.segmentations_of(row["id"])],
    }
    if detail:
        view["meshes"] = [mesh_view(m, catalog) for m in catalog.meshes_of(row["id"])]
    return view

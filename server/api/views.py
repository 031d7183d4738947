"""What the API shows of catalog rows: de-identified views (pseudonymous ids, modality, descriptions,
dimensions and spacing). The socket `job` events carry the same job view.
"""

from __future__ import annotations

from collections.abc import Mapping

from server.services.imports import segmentation_view
from server.storage.catalog import Catalog


def series_view(row: dict) -> dict:
    """A series as listings show it, with what its reconstruction warns of (uneven spacing, gaps allowed,
    dropped duplicates: the volume's warnings, which name no patient)."""
    return {**{key: row[key] for key in ("id", "modality", "description", "slices", "rows", "columns", "spacing_mm")},
            "warnings": list(row.get("warnings") or [])}


def mesh_view(row: dict, warnings: Mapping[str, list[str]]) -> dict:
    """A mesh as listings show it, with the warnings of the series it was built from (``warnings``: series id ->
    its warnings, e.g. `series_warnings` of the mesh's study)."""
    view = {key: row[key] for key in ("id", "study_id", "series_id", "preset", "threshold", "triangles", "vertices",
                                      "bbox_lps_mm")}
    if row.get("segmentation_id"):
        view["segmentation_id"] = row["segmentation_id"]
    return {**view, "warnings": list(warnings.get(row.get("series_id"), [])), "url": f"/api/meshes/{row['id']}.glb"}


def series_warnings(catalog: Catalog, study_id: str) -> dict[str, list[str]]:
    """Each series of a study -> what its reconstruction warns of."""
    return {series["id"]: series["warnings"] for series in catalog.series_of(study_id)}


def job_view(job: dict) -> dict:
    keys = ("id", "study_id", "series_id", "state", "stage", "percent", "error", "mesh_ids",
            "created_at", "started_at", "finished_at")
    return {**{k: job.get(k) for k in keys}, "params": job["params"]}


def study_view(catalog: Catalog, row: dict, *, detail: bool) -> dict:
    series = catalog.series_of(row["id"])
    view = {
        "id": row["id"],
        "description": row["description"],
        "modalities": [m for m in row["modalities"].split("\\") if m],
        "created_at": row["created_at"],
        "instances": catalog.instance_count(row["id"]),
        "series": [series_view(s) for s in series],
        "segmentations": [segmentation_view(s) for s in catalog.segmentations_of(row["id"])],
    }
    if detail:
        warnings = {s["id"]: s["warnings"] for s in series}
        view["meshes"] = [mesh_view(m, warnings) for m in catalog.meshes_of(row["id"])]
    return view

"""Mesh requests: answer from the content-addressed cache, or join or queue the job that builds the meshes.

A mesh's id is its content address: the hash of its source pixels (the series' `input_hash`), its parameters
and the code version, so the same request always names the same mesh and a built mesh is never built again.
The HTTP API and the start-up import both ask here; the job runner (server/services/jobs.py) calls
`job_spec` to start a job and `record_mesh` for each mesh a worker returns.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconstruction import __version__
from reconstruction.presets import preset_names_for, presets_for
from reconstruction.series import series_preference
from reconstruction.surface import DEFAULT_TARGET_TRIANGLES
from server.services.errors import Busy, Invalid, NotFound
from server.services.imports import instance_paths
from server.services.jobs import JobRunner, QueueFullError, new_job_id
from server.storage.artifacts import ArtifactStore
from server.storage.catalog import Catalog

MIN_TRIANGLES, MAX_TRIANGLES = 1_000, 2_000_000
TRIANGLE_CHOICES = (50_000, 150_000, DEFAULT_TARGET_TRIANGLES)  # what the lobby offers
BUILD_PARAMETERS = ("target_triangles", "allow_gaps", "largest_only", "slice_smoothing")  # besides preset, level
PARAMETERS = frozenset({"series", "presets", "threshold", "target_triangles", "allow_gaps", "largest_only",
                        "slice_smoothing"})
STRUCTURES = "structures"  # the preset of a segmentation's mesh: one node per structure


@dataclass(frozen=True)
class MeshAnswer:
    """The meshes, when all were built before; else the job (queued, running, or joined) that builds them."""

    meshes: list[dict] | None = None
    job: dict | None = None


def best_series(series: list[dict]) -> dict | None:
    """The catalog series a 3D model is built from when the request names none (reconstruction's choice)."""
    if not series:
        return None
    return max(series, key=lambda s: series_preference(s["modality"], s["slices"], s["spacing_mm"][0],
                                                       (s["spacing_mm"][1], s["spacing_mm"][2])))


def mesh_parameters(body: Mapping[str, Any], modality: str) -> dict:
    """The checked parameters of a mesh request for a series of `modality`. Raises Invalid."""
    unknown = set(body) - PARAMETERS
    if unknown:
        raise Invalid("bad_parameter", f"unknown field(s): {', '.join(sorted(unknown))}")
    presets = body.get("presets")
    available = list(presets_for(modality))
    if presets is None:
        presets = preset_names_for(modality)
    if not isinstance(presets, list) or not presets or not all(isinstance(p, str) for p in presets):
        raise Invalid("bad_parameter", "presets must be a non-empty list of preset names")
    unknown_presets = [p for p in presets if p not in available]
    if unknown_presets:
        raise Invalid("unknown_preset", f"unknown preset(s) {unknown_presets}; {modality} has {available}")
    threshold = body.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)
                                  or not math.isfinite(threshold)):
        raise Invalid("bad_parameter", "threshold must be a finite number or null")
    target = body.get("target_triangles", DEFAULT_TARGET_TRIANGLES)
    if isinstance(target, bool) or not isinstance(target, int) or not MIN_TRIANGLES <= target <= MAX_TRIANGLES:
        raise Invalid("bad_parameter", f"target_triangles must be an integer in [{MIN_TRIANGLES}, {MAX_TRIANGLES}]")
    allow_gaps, largest_only = body.get("allow_gaps", False), body.get("largest_only", False)
    for name, value in (("allow_gaps", allow_gaps), ("largest_only", largest_only)):
        if not isinstance(value, bool):
            raise Invalid("bad_parameter", f"{name} must be a boolean")
    slice_smoothing = body.get("slice_smoothing")
    if slice_smoothing is not None and not isinstance(slice_smoothing, bool):
        raise Invalid("bad_parameter", "slice_smoothing must be true, false or null (on for slices over 2 mm)")
    return {"presets": list(dict.fromkeys(presets)), "threshold": None if threshold is None else float(threshold),
            "target_triangles": target, "allow_gaps": allow_gaps, "largest_only": largest_only,
            "slice_smoothing": slice_smoothing}


def mesh_id_for(input_hash: str, preset: str, params: Mapping[str, Any]) -> str:
    """The content address of a mesh: source pixels (input hash), parameters and the code version."""
    key = {"input": input_hash, "preset": preset, "threshold": params["threshold"],
           "target_triangles": params["target_triangles"], "allow_gaps": params["allow_gaps"],
           "largest_only": params.get("largest_only", False), "slice_smoothing": params.get("slice_smoothing"),
           "version": __version__}
    return "m" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


class MeshRequests:
    """Mesh requests against one catalog and job runner."""

    def __init__(self, catalog: Catalog, jobs: JobRunner):
        self.catalog = catalog
        self.jobs = jobs

    def ensure(self, study_id: str, body: Mapping[str, Any]) -> MeshAnswer:
        """The meshes of `body`'s request for study `study_id`, or the job that builds them.

        Raises NotFound (study, series), Invalid (parameters) or Busy (the job queue is full).
        """
        if self.catalog.study(study_id) is None:
            raise NotFound("not_found", f"no study {study_id!r}")
        if "segmentation" in body:
            return self._structures(study_id, body)
        all_series = self.catalog.series_of(study_id)
        series_id = body.get("series")
        if series_id is not None and not isinstance(series_id, str):
            raise Invalid("bad_parameter", "series must be a series id string")
        series = next((s for s in all_series if s["id"] == series_id), None) if series_id else best_series(all_series)
        if series is None:
            raise NotFound("not_found", f"no series {series_id!r} in study {study_id}" if series_id
                           else f"study {study_id} has no 3D series")
        params = mesh_parameters(body, series["modality"])
        mesh_ids = {p: mesh_id_for(series["input_hash"], p, params) for p in params["presets"]}
        existing = [self.catalog.mesh(mesh_id) for mesh_id in mesh_ids.values()]
        if all(existing):
            return MeshAnswer(meshes=existing)
        cache_key = hashlib.sha256(json.dumps(sorted(mesh_ids.values())).encode()).hexdigest()
        return self._job(study_id, series["id"], {**params, "mesh_ids": mesh_ids}, cache_key)


    def _structures(self, study_id: str, body: Mapping[str, Any]) -> MeshAnswer:
        """The mesh of a segmentation's structures (one GLB, one node per structure), or the job that builds it."""
        unknown = set(body) - {"segmentation", "target_triangles"}
        if unknown:
            raise Invalid("bad_parameter", f"unknown field(s) with a segmentation: {', '.join(sorted(unknown))}")
        segmentation_id = body["segmentation"]
        segmentation = self.catalog.segmentation(segmentation_id) if isinstance(segmentation_id, str) else None
        if segmentation is None or segmentation["study_id"] != study_id:
            raise NotFound("not_found", f"no segmentation {segmentation_id!r} in study {study_id}")
        target = body.get("target_triangles", DEFAULT_TARGET_TRIANGLES)
        if isinstance(target, bool) or not isinstance(target, int) or not MIN_TRIANGLES <= target <= MAX_TRIANGLES:
            raise Invalid("bad_parameter", f"target_triangles must be an integer in [{MIN_TRIANGLES}, {MAX_TRIANGLES}]")
        key = {"masks": segmentation["masks"], "preset": STRUCTURES, "target_triangles": target,
               "structures": segmentation["structures"], "version": __version__}
        mesh_id = "m" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        existing = self.catalog.mesh(mesh_id)
        if existing is not None:
            return MeshAnswer(meshes=[existing])
        params = {"kind": STRUCTURES, "segmentation": segmentation_id, "target_triangles": target,
                  "mesh_ids": {STRUCTURES: mesh_id}}
        return self._job(study_id, segmentation["series_id"], params, mesh_id)

    def _job(self, study_id: str, series_id: str, params: dict, cache_key: str) -> MeshAnswer:
        """The queued or running job of `cache_key`, or a new one. Raises Busy when the queue is full."""
        for job in self.catalog.jobs_in(("queued", "running")):
            if job["cache_key"] == cache_key:
                return MeshAnswer(job=job)
        job = {"id": new_job_id(), "study_id": study_id, "series_id": series_id, "params": params,
               "cache_key": cache_key}
        try:
            self.jobs.submit(job)
        except QueueFullError as e:
            raise Busy("queue_full", str(e), retry_after=10) from None
        return MeshAnswer(job=self.catalog.job(job["id"]))


def job_spec(catalog: Catalog, store: ArtifactStore, job: Mapping[str, Any]) -> dict:
    """What the worker process needs: the study's instance files and the job's parameters.

    Raises NotFound if the series was deleted meanwhile.
    """
    if job["params"].get("kind") == STRUCTURES:
        return structures_spec(catalog, store, job)

    series = catalog.series(job["series_id"])
    if series is None:
        raise NotFound("not_found", "the series of this job no longer exists")
    params = job["params"]
    return {
        "inputs": instance_paths(catalog, store, job["study_id"]),
        "series_uid": series["uid"],
        "presets": params["presets"],
        "threshold": params["threshold"],
        "target_triangles": params["target_triangles"],
        "allow_gaps": params["allow_gaps"],
        "largest_only": params.get("largest_only", False),
        "slice_smoothing": params.get("slice_smoothing"),
        "mesh_ids": params["mesh_ids"],
        "artifacts_root": str(store.root),
    }


def structures_spec(catalog: Catalog, store: ArtifactStore, job: Mapping[str, Any]) -> dict:
    """What the worker needs to mesh a segmentation's structures: its masks and structures."""
    segmentation = catalog.segmentation(job["params"]["segmentation"])
    if segmentation is None:
        raise NotFound("not_found", "the segmentation of this job no longer exists")
    return {"kind": STRUCTURES, "masks": str(store.path_for(segmentation["masks"], ".npz")),
            "masks_digest": segmentation["masks"], "structures": segmentation["structures"],
            "target_triangles": job["params"]["target_triangles"], "mesh_ids": job["params"]["mesh_ids"],
            "segmentation_id": segmentation["id"], "artifacts_root": str(store.root)}


def record_mesh(catalog: Catalog, job: Mapping[str, Any], mesh: Mapping[str, Any]) -> None:
    """Add a mesh a job built to the catalog, with the parameters it was built with (its provenance), and the
    segmentation a grown structure keeps."""
    segmentation = mesh.get("segmentation")
    if segmentation is not None:
        catalog.add_segmentation({**segmentation, "study_id": job["study_id"], "series_id": job["series_id"]})
    params = {name: job["params"].get(name) for name in BUILD_PARAMETERS}
    catalog.add_mesh({**{k: v for k, v in mesh.items() if k != "segmentation"}, "study_id": job["study_id"],
                      "series_id": job["series_id"], "params": {**params, "version": __version__}})

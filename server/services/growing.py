"""Structures grown in a room: a `structure.grow` op (logged by the room) becomes a job; its outcome becomes the
room's `structure.add` (the new mesh, which every client loads) or `structure.fail` (why not).

The job grows from the seed in the volume of the series the room's meshes were made from
(``reconstruction.growing``), meshes the structure, keeps its mask (a DICOM SEG and the masks) as a segmentation
of the study, and records the mesh. The session hub (server/services/hub.py) calls `submit` after the op is
logged and hears of the job's progress and end through the job runner's updates (server/app.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from server.services.jobs import JobRunner, QueueFullError, new_job_id
from server.storage.artifacts import ArtifactStore
from server.storage.catalog import Catalog
from sessions.events import Event
from sessions.room import RoomInfo, RoomMode
from sessions.state import structure_entry

GROW = "grow"
TRIANGLES = 100_000  # a grown structure's budget
DEFAULT_COLOR = "#e6194b"


class GrowRequests:
    """Grow jobs against one catalog and job runner."""

    def __init__(self, catalog: Catalog, jobs: JobRunner):
        self.catalog = catalog
        self.jobs = jobs

    def submit(self, info: RoomInfo, event: Event) -> str | None:
        """Queue the job of a logged structure.grow event; None when it was queued, else why it cannot run."""
        series_id = self._series_of(info)
        if series_id is None:
            return "the room has no mesh made from a series to grow in"
        data = event.data
        mesh_id = "m" + hashlib.sha256(f"{info.id}:{data['request']}:{event.hash}".encode()).hexdigest()[:24]
        params = {"kind": GROW, "room": info.id, "request": data["request"], "seed": data["seed"],
                  "low": data.get("low"), "high": data.get("high"), "max_radius_mm": data.get("max_radius_mm"),
                  "name": data["name"], "color": data.get("color", DEFAULT_COLOR),
                  "training": info.mode is RoomMode.TRAINING, "mesh_ids": {"structure": mesh_id}}
        job = {"id": new_job_id(), "study_id": info.study, "series_id": series_id, "params": params,
               "cache_key": mesh_id}
        try:
            self.jobs.submit(job)
        except QueueFullError:
            return "the server is busy: try again in a moment"
        return None

    def _series_of(self, info: RoomInfo) -> str | None:
        for mesh_id in info.meshes:
            mesh = self.catalog.mesh(mesh_id)
            if mesh is not None:
                return mesh["series_id"]
        return None


def is_grow(job: Mapping[str, Any]) -> bool:
    return job["params"].get("kind") == GROW


def outcome(catalog: Catalog, job: Mapping[str, Any]) -> dict[str, Any] | None:
    """The structure.add data of a finished grow job, or None if it built no mesh."""
    params = job["params"]
    mesh = catalog.mesh(params["mesh_ids"]["structure"])
    if mesh is None or not mesh.get("segmentation_id"):
        return None
    segmentation = catalog.segmentation(mesh["segmentation_id"])
    if segmentation is None or not segmentation["structures"]:
        return None
    structure = segmentation["structures"][0]
    entry = structure_entry({"id": f"{mesh['id']}:{structure['number']}", "mesh": mesh["id"],
                             "name": structure["name"], "color": structure["color"],
                             "volume_ml": structure["volume_ml"]}, 0)
    return {"request": params["request"], **{k: entry[k] for k in ("id", "mesh", "name", "color", "volume_ml")}}


def job_spec(catalog: Catalog, store: ArtifactStore, job: Mapping[str, Any]) -> dict:
    """What the worker needs to grow: the study's files, the series, and the request."""
    series = catalog.series(job["series_id"])
    if series is None:
        raise ValueError("the series of this room no longer exists")
    params = job["params"]
    inputs = [str(store.path_for(i["sha256"], ".dcm")) for i in catalog.instances_of(job["study_id"])]
    return {"kind": GROW, "inputs": inputs, "series_uid": series["uid"], "target_triangles": TRIANGLES,
            "artifacts_root": str(store.root),
            **{key: params[key] for key in ("seed", "low", "high", "max_radius_mm", "name", "color", "training",
                                            "mesh_ids")}}

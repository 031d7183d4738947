"""Import the studies named in the settings when the server starts, and build their default meshes (the DICOM
receiver asks for the same meshes of what it receives: `build_default_meshes`).

This is how `make run` puts the sample study in the library: idempotent, because imports deduplicate
instances and mesh requests are answered from the content-addressed cache.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from server.services.errors import ServiceError
from server.services.imports import Library, import_folder
from server.services.meshes import MeshRequests

log = logging.getLogger("theatrum.import")


def import_in_background(paths: list[Path], library: Library, meshes: MeshRequests) -> asyncio.Task | None:
    """Start a task importing `paths` (so the server answers at once), or None when there are none."""
    return asyncio.create_task(import_all(paths, library, meshes)) if paths else None


async def import_all(paths: list[Path], library: Library, meshes: MeshRequests) -> None:
    """Import each path, then ask for its studies' default meshes; log what happened, naming only the path the
    operator gave (never the files inside it, whose names may carry a patient's)."""
    loop = asyncio.get_running_loop()
    for path in paths:
        try:
            result = await loop.run_in_executor(None, import_folder, library, path)
        except ServiceError as e:  # the detail names files inside the folder, which may carry names: not logged
            log.error("cannot import %s (%s); `theatrum series %s` lists what it holds and why", path, e.code, path)
            continue
        for study in result["studies"]:
            added = result["instances"]["added"]
            log.info("study %s imported from %s (%d new instances)", study["study_id"], path, added)
        build_default_meshes(result, meshes)


def build_default_meshes(result: dict, meshes: MeshRequests) -> None:
    """Ask for the default meshes of every study of an import `result` (answered from the cache, or queued);
    log what happened by pseudonymous study id."""
    for study in result["studies"]:
        try:
            answer = meshes.ensure(study["study_id"], {})
        except ServiceError as e:
            log.error("cannot build meshes for study %s (%s)", study["study_id"], e.code)
            continue
        if answer.meshes is not None:
            log.info("meshes of study %s are ready: %s", study["study_id"],
                     ", ".join(m["preset"] for m in answer.meshes))
        else:
            log.info("building meshes of study %s (job %s)", study["study_id"], answer.job["id"])

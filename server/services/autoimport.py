"""Import studies named in the settings when the server starts, and build their default meshes.

This is how `make run` puts the sample study in the library: idempotent, because imports deduplicate
instances and mesh requests are answered from the content-addressed cache.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from server.api import studies
from server.middleware.errors import ApiError
from server.services import imports as library

log = logging.getLogger("theatrum.import")


async def import_on_start(app: web.Application) -> None:
    """Start a background task importing ``settings.imports`` (so the server answers at once)."""
    paths = [Path(p) for p in app["settings"].imports]
    if paths:
        app["autoimport"] = asyncio.create_task(_import_all(app, paths))


async def _import_all(app: web.Application, paths: list[Path]) -> None:
    loop = asyncio.get_running_loop()
    for path in paths:
        try:
            result = await loop.run_in_executor(None, library.import_folder, app, path)
        except ApiError as e:
            log.error("cannot import %s: %s", path, e.detail)
            continue
        for study in result["studies"]:
            added = result["instances"]["added"]
            log.info("study %s imported from %s (%d new instances)", study["study_id"], path, added)
            try:
                kind, answer = studies.ensure_meshes(app, study["study_id"], {})
            except ApiError as e:
                log.error("cannot build meshes for study %s: %s", study["study_id"], e.detail)
                continue
            if kind == "meshes":
                log.info("meshes of study %s are ready: %s", study["study_id"],
                         ", ".join(m["preset"] for m in answer["meshes"]))
            else:
                log.info("building meshes of study %s (job %s)", study["study_id"], answer["job"]["id"])

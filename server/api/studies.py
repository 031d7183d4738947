"""HTTP handlers of the study library: upload, list, inspect and delete studies."""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from pathlib import Path

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from server.api.errors import ApiError, found
from server.api.views import study_view
from server.appkeys import CATALOG, JOBS, LIBRARY, SETTINGS, TMP
from server.services import imports

CHUNK = 1 << 16


def _study_or_404(request: web.Request) -> dict:
    study_id = request.match_info["study_id"]
    return found(request.app[CATALOG].study(study_id), "study", study_id)


async def list_studies(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG]
    return web.json_response({"studies": [study_view(catalog, r, detail=False) for r in catalog.studies()]})


async def get_study(request: web.Request) -> web.Response:
    return web.json_response(study_view(request.app[CATALOG], _study_or_404(request), detail=True))


async def delete_study(request: web.Request) -> web.Response:
    study_id = _study_or_404(request)["id"]
    for job in request.app[CATALOG].jobs_in(("queued", "running")):
        if job["study_id"] == study_id:
            await request.app[JOBS].cancel(job["id"])
    imports.delete_study(request.app[LIBRARY], study_id)
    return web.Response(status=204)


async def upload_study(request: web.Request) -> web.Response:
    """Stream the body (multipart files or one zip) to a private temp folder, then import it."""
    limit = request.app[SETTINGS].max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "upload_too_large", f"the upload is {request.content_length} bytes; the limit is {limit}")
    folder = request.app[TMP] / f"upload-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    loop = asyncio.get_running_loop()
    try:
        await receive_upload(request, folder, limit)
        study = request.query.get("study")
        result = await loop.run_in_executor(None, imports.import_folder, request.app[LIBRARY], folder, study)
    finally:
        await loop.run_in_executor(None, lambda: shutil.rmtree(folder, ignore_errors=True))
    return web.json_response(result, status=201 if result["instances"]["added"] else 200)


async def receive_upload(request: web.Request, folder: Path, limit: int) -> int:
    """Stream the request body into `folder` (multipart parts or one raw body); returns bytes received.

    File names from the client are never used as paths: a part is saved under its base name reduced to letters,
    digits, dots, dashes and underscores (a NIfTI mask's file name is its structure's name), or as ``part-<n>``
    when that is empty, hidden or taken.
    """
    received = 0

    async def save(stream_read, path: Path) -> None:
        nonlocal received
        with open(path, "wb") as f:
            while chunk := await stream_read(CHUNK):
                received += len(chunk)
                if received > limit:
                    raise ApiError(413, "upload_too_large", f"the upload exceeds the limit of {limit} bytes")
                f.write(chunk)

    if request.content_type.startswith("multipart/"):
        n = 0
        try:
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue  # a nested multipart: not something a DICOM upload sends
                if part.filename is None and part.name not in ("file", "files", "zip"):
                    await part.release()
                    continue
                n += 1
                await save(part.read_chunk, folder / _part_name(part.filename, n, folder))
        except (ValueError, AssertionError, HttpProcessingError) as e:
            raise ApiError(400, "malformed_multipart", f"the multipart body cannot be parsed: {e}") from None
        if n == 0:
            raise ApiError(400, "empty_upload", "the multipart body holds no file parts")
    else:
        await save(request.content.read, folder / "part-000001")
        if received == 0:
            raise ApiError(400, "empty_upload", "the request body is empty")
    return received


def _part_name(filename: str | None, n: int, folder: Path) -> str:
    """A safe, new name in ``folder`` for upload part ``n`` (see `receive_upload`)."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", (filename or "").replace("\\", "/").rsplit("/", 1)[-1])[-100:]
    if not base or base.startswith(".") or (folder / base).exists():
        return f"part-{n:06d}"
    return base


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/studies", list_studies),
        web.post("/api/studies", upload_study),
        web.get("/api/studies/{study_id}", get_study),
        web.delete("/api/studies/{study_id}", delete_study),
    ]

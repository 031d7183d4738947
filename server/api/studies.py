"""HTTP handlers of the study library: upload, list, inspect, delete studies; request and fetch meshes; jobs.

Every response is de-identified: pseudonymous ids, modality, descriptions, dimensions and spacing only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import shutil
import uuid
from pathlib import Path

from aiohttp import web

from reconstruction import __version__
from reconstruction.presets import preset_names_for, presets_for
from server.api.glb import artifact_kind, send_glb
from server.middleware.errors import ApiError, read_json
from server.services import imports as library
from server.services.jobs import QueueFullError, new_job_id

MIN_TRIANGLES, MAX_TRIANGLES = 1_000, 2_000_000
DEFAULT_TRIANGLES = 300_000


# -- views ------------------------------------------------------------------------------------------------
def series_view(row: dict) -> dict:
    return {
        "id": row["id"],
        "modality": row["modality"],
        "description": row["description"],
        "slices": row["slices"],
        "rows": row["rows"],
        "columns": row["columns"],
        "spacing_mm": row["spacing_mm"],
    }


def mesh_view(row: dict) -> dict:
    return {
        "id": row["id"],
        "study_id": row["study_id"],
        "series_id": row["series_id"],
        "preset": row["preset"],
        "threshold": row["threshold"],
        "triangles": row["triangles"],
        "vertices": row["vertices"],
        "bbox_lps_mm": row["bbox_lps_mm"],
        "url": f"/api/meshes/{row['id']}.glb",
    }


def job_view(job: dict) -> dict:
    keys = ("id", "study_id", "series_id", "state", "stage", "percent", "error", "mesh_ids",
            "created_at", "started_at", "finished_at")
    view = {k: job.get(k) for k in keys}
    view["params"] = job["params"]
    return view


def study_view(app: web.Application, row: dict, *, detail: bool) -> dict:
    catalog = app["catalog"]
    series = catalog.series_of(row["id"])
    view = {
        "id": row["id"],
        "description": row["description"],
        "modalities": [m for m in row["modalities"].split("\\") if m],
        "created_at": row["created_at"],
        "instances": catalog.instance_count(row["id"]),
        "series": [series_view(s) for s in series],
    }
    if detail:
        view["meshes"] = [mesh_view(m) for m in catalog.meshes_of(row["id"])]
    return view


def _study_or_404(app: web.Application, study_id: str) -> dict:
    row = app["catalog"].study(study_id)
    if row is None:
        raise ApiError(404, "not_found", f"no study {study_id!r}")
    return row


# -- studies ----------------------------------------------------------------------------------------------
async def list_studies(request: web.Request) -> web.Response:
    app = request.app
    return web.json_response({"studies": [study_view(app, r, detail=False) for r in app["catalog"].studies()]})


async def get_study(request: web.Request) -> web.Response:
    row = _study_or_404(request.app, request.match_info["study_id"])
    return web.json_response(study_view(request.app, row, detail=True))


async def delete_study(request: web.Request) -> web.Response:
    app = request.app
    study_id = request.match_info["study_id"]
    _study_or_404(app, study_id)
    for job in app["catalog"].jobs_in(("queued", "running")):
        if job["study_id"] == study_id:
            await app["jobs"].cancel(job["id"])
    for digest, suffix in library.unreferenced_files(app, app["catalog"].delete_study(study_id)):
        app["store"].delete(digest, suffix)
    return web.Response(status=204)


async def upload_study(request: web.Request) -> web.Response:
    """Stream the body (multipart files or one zip) to a private temp folder, then import it."""
    app = request.app
    settings = app["settings"]
    limit = settings.max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "upload_too_large", f"the upload is {request.content_length} bytes; the limit is {limit}")
    folder = Path(app["tmp"]) / f"upload-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    loop = asyncio.get_running_loop()
    try:
        await library.receive_upload(request, folder, limit)
        result = await loop.run_in_executor(None, library.import_folder, app, folder)
    finally:
        await loop.run_in_executor(None, lambda: shutil.rmtree(folder, ignore_errors=True))
    status = 201 if result["instances"]["added"] else 200
    return web.json_response(result, status=status)


# -- meshes and jobs --------------------------------------------------------------------------------------
def _mesh_params(body: dict, modality: str) -> dict:
    known = set(body) - {"series", "presets", "threshold", "target_triangles", "allow_gaps"}
    if known:
        raise ApiError(400, "bad_parameter", f"unknown field(s): {', '.join(sorted(known))}")
    presets = body.get("presets")
    available = list(presets_for(modality))
    if presets is None:
        presets = preset_names_for(modality)
    if not isinstance(presets, list) or not presets or not all(isinstance(p, str) for p in presets):
        raise ApiError(400, "bad_parameter", "presets must be a non-empty list of preset names")
    unknown = [p for p in presets if p not in available]
    if unknown:
        raise ApiError(400, "unknown_preset", f"unknown preset(s) {unknown}; {modality} has {available}")
    threshold = body.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)
                                  or not math.isfinite(threshold)):
        raise ApiError(400, "bad_parameter", "threshold must be a finite number or null")
    target = body.get("target_triangles", DEFAULT_TRIANGLES)
    if isinstance(target, bool) or not isinstance(target, int) or not MIN_TRIANGLES <= target <= MAX_TRIANGLES:
        raise ApiError(400, "bad_parameter",
                       f"target_triangles must be an integer in [{MIN_TRIANGLES}, {MAX_TRIANGLES}]")
    allow_gaps = body.get("allow_gaps", False)
    if not isinstance(allow_gaps, bool):
        raise ApiError(400, "bad_parameter", "allow_gaps must be a boolean")
    return {"presets": list(dict.fromkeys(presets)), "threshold": None if threshold is None else float(threshold),
            "target_triangles": target, "allow_gaps": allow_gaps}


def mesh_id_for(input_hash: str, preset: str, params: dict) -> str:
    """The content address of a mesh: source pixels (input hash), parameters and the code version."""
    key = {"input": input_hash, "preset": preset, "threshold": params["threshold"],
           "target_triangles": params["target_triangles"], "allow_gaps": params["allow_gaps"],
           "version": __version__}
    return "m" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def best_series(series: list[dict]) -> dict | None:
    """CT first, then most slices, then finest in-plane spacing (as the pipeline picks)."""
    if not series:
        return None
    return sorted(series, key=lambda s: (s["modality"] != "CT", -s["slices"], s["spacing_mm"][1]))[0]


def ensure_meshes(app: web.Application, study_id: str, body: dict) -> tuple[str, dict]:
    """Answer a mesh request from the cache, or join or queue the job that builds it.

    Returns ("meshes", {"meshes": [...]}) or ("job", {"job": {...}}); raises ApiError on bad input.
    """
    catalog = app["catalog"]
    _study_or_404(app, study_id)
    all_series = catalog.series_of(study_id)
    series_id = body.get("series")
    if series_id is not None and not isinstance(series_id, str):
        raise ApiError(400, "bad_parameter", "series must be a series id string")
    series = next((s for s in all_series if s["id"] == series_id), None) if series_id else best_series(all_series)
    if series is None:
        raise ApiError(404, "not_found", f"no series {series_id!r} in study {study_id}" if series_id
                       else f"study {study_id} has no 3D series")
    params = _mesh_params(body, series["modality"])
    mesh_ids = {p: mesh_id_for(series["input_hash"], p, params) for p in params["presets"]}
    existing = [catalog.mesh(mid) for mid in mesh_ids.values()]
    if all(existing):
        return "meshes", {"meshes": [mesh_view(m) for m in existing]}
    cache_key = hashlib.sha256(json.dumps(sorted(mesh_ids.values())).encode()).hexdigest()
    for job in catalog.jobs_in(("queued", "running")):
        if job["cache_key"] == cache_key:
            return "job", {"job": job_view(job)}
    job = {"id": new_job_id(), "study_id": study_id, "series_id": series["id"],
           "params": {**params, "mesh_ids": mesh_ids}, "cache_key": cache_key}
    try:
        app["jobs"].submit(job)
    except QueueFullError as e:
        raise ApiError(429, "queue_full", str(e), {"Retry-After": "10"}) from None
    return "job", {"job": job_view(catalog.job(job["id"]))}


async def request_meshes(request: web.Request) -> web.Response:
    body = await read_json(request)
    kind, result = ensure_meshes(request.app, request.match_info["study_id"], body)
    if kind == "meshes":
        return web.json_response(result, status=200)
    return web.json_response(result, status=202, headers={"Location": f"/api/jobs/{result['job']['id']}"})


async def list_meshes(request: web.Request) -> web.Response:
    study_id = request.match_info["study_id"]
    _study_or_404(request.app, study_id)
    return web.json_response({"meshes": [mesh_view(m) for m in request.app["catalog"].meshes_of(study_id)]})


def job_spec(app: web.Application, job: dict) -> dict:
    """What the worker process needs: the study's instance files and the job's parameters."""
    catalog = app["catalog"]
    series = catalog.series(job["series_id"])
    if series is None:
        raise ApiError(404, "not_found", "the series of this job no longer exists")
    store = app["store"]
    inputs = [str(store.path_for(i["sha256"], ".dcm")) for i in catalog.instances_of(job["study_id"])]
    params = job["params"]
    return {
        "inputs": inputs,
        "series_uid": series["uid"],
        "presets": params["presets"],
        "threshold": params["threshold"],
        "target_triangles": params["target_triangles"],
        "allow_gaps": params["allow_gaps"],
        "mesh_ids": params["mesh_ids"],
        "artifacts_root": str(store.root),
    }


def record_mesh(app: web.Application, job: dict, mesh: dict) -> None:
    app["catalog"].add_mesh({**mesh, "study_id": job["study_id"], "series_id": job["series_id"]})


async def push_job_update(app: web.Application, job: dict) -> None:
    await app["sio"].emit("job", job_view(job), room="admin")


def _job_or_404(request: web.Request) -> dict:
    job = request.app["catalog"].job(request.match_info["job_id"])
    if job is None:
        raise ApiError(404, "not_found", f"no job {request.match_info['job_id']!r}")
    return job


def _mesh_or_404(request: web.Request) -> dict:
    mesh = request.app["catalog"].mesh(request.match_info["mesh_id"])
    if mesh is None:
        raise ApiError(404, "not_found", f"no mesh {request.match_info['mesh_id']!r}")
    return mesh


async def get_job(request: web.Request) -> web.Response:
    return web.json_response(job_view(_job_or_404(request)))


async def cancel_job(request: web.Request) -> web.Response:
    app = request.app
    job = _job_or_404(request)
    job_id = job["id"]
    if not await app["jobs"].cancel(job_id):
        raise ApiError(409, "conflict", f"job {job_id} is already {job['state']}")
    return web.json_response(job_view(app["catalog"].job(job_id)))


async def get_mesh(request: web.Request) -> web.Response:
    return web.json_response(mesh_view(_mesh_or_404(request)))


async def get_mesh_glb(request: web.Request) -> web.StreamResponse:
    mesh = _mesh_or_404(request)
    kind = artifact_kind(request.query.get("format", "draco"), request.query.get("lod"))
    digest = mesh["artifacts"].get(kind)
    if digest is None:
        raise ApiError(404, "not_found", f"mesh {mesh['id']} has no {kind} artifact")
    path = request.app["store"].path_for(digest, ".glb")
    return await send_glb(request, digest, path, compressible=not kind.startswith("draco"))

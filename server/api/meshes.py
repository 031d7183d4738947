"""HTTP handlers of meshes: request a study's meshes (cached or built by a job), list them, fetch one."""

from __future__ import annotations

import asyncio

from aiohttp import web

from server.api.errors import ApiError, found
from server.api.glb import artifact_kind, send_glb
from server.api.params import read_json
from server.api.views import job_view, mesh_view, series_warnings
from server.appkeys import ARTIFACTS, CATALOG, MESH_REQUESTS


async def request_meshes(request: web.Request) -> web.Response:
    """200 with the meshes when they were built before, else 202 with the job that builds them."""
    body = await read_json(request)
    answer = request.app[MESH_REQUESTS].ensure(request.match_info["study_id"], body)
    if answer.meshes is not None:
        warnings = series_warnings(request.app[CATALOG], request.match_info["study_id"])
        return web.json_response({"meshes": [mesh_view(m, warnings) for m in answer.meshes]}, status=200)
    job = job_view(answer.job)
    return web.json_response({"job": job}, status=202, headers={"Location": f"/api/jobs/{job['id']}"})


async def list_meshes(request: web.Request) -> web.Response:
    study_id = request.match_info["study_id"]
    catalog = request.app[CATALOG]
    found(catalog.study(study_id), "study", study_id)
    warnings = series_warnings(catalog, study_id)
    return web.json_response({"meshes": [mesh_view(m, warnings) for m in catalog.meshes_of(study_id)]})


def _mesh_or_404(request: web.Request) -> dict:
    mesh_id = request.match_info["mesh_id"]
    return found(request.app[CATALOG].mesh(mesh_id), "mesh", mesh_id)


async def get_mesh(request: web.Request) -> web.Response:
    mesh = _mesh_or_404(request)
    return web.json_response(mesh_view(mesh, series_warnings(request.app[CATALOG], mesh["study_id"])))


async def get_mesh_glb(request: web.Request) -> web.StreamResponse:
    mesh = _mesh_or_404(request)
    kind = artifact_kind(request.query.get("format", "draco"), request.query.get("lod"))
    digest = mesh["artifacts"].get(kind)
    if digest is None:
        raise ApiError(404, "not_found", f"mesh {mesh['id']} has no {kind} artifact")
    path = await asyncio.to_thread(request.app[ARTIFACTS].verified_path, digest, ".glb")
    return await send_glb(request, digest, path, compressible=not kind.startswith("draco"))


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/studies/{study_id}/meshes", request_meshes),
        web.get("/api/studies/{study_id}/meshes", list_meshes),
        web.get("/api/meshes/{mesh_id}.glb", get_mesh_glb),
        web.get("/api/meshes/{mesh_id}", get_mesh),
    ]

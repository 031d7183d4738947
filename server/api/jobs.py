"""HTTP handlers of reconstruction jobs: progress, and cancellation."""

from __future__ import annotations

from aiohttp import web

from server.api.errors import ApiError, found
from server.api.views import job_view
from server.appkeys import CATALOG, JOBS


def _job_or_404(request: web.Request) -> dict:
    job_id = request.match_info["job_id"]
    return found(request.app[CATALOG].job(job_id), "job", job_id)


async def get_job(request: web.Request) -> web.Response:
    return web.json_response(job_view(_job_or_404(request)))


async def cancel_job(request: web.Request) -> web.Response:
    job = _job_or_404(request)
    if not await request.app[JOBS].cancel(job["id"]):
        raise ApiError(409, "conflict", f"job {job['id']} is already {job['state']}")
    return web.json_response(job_view(request.app[CATALOG].job(job["id"])))


def routes() -> list[web.RouteDef]:
    return [web.get("/api/jobs/{job_id}", get_job), web.delete("/api/jobs/{job_id}", cancel_job)]

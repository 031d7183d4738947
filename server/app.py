"""The application: one aiohttp app with python-socketio mounted, composed explicitly from its parts.

``build_app(settings)`` wires storage (catalog, artifact store), access (admin token), the job runner, the HTTP
routes, the socket.io server and the web client's static files. Nothing registers itself behind the scenes:
every route is listed in ``routes()``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import socketio
from aiohttp import web

from server.api import pacs, rooms, studies
from server.api.openapi import openapi_handler
from server.config import Settings
from server.metrics import Metrics
from server.middleware.auth import ADMIN_TOKEN_FILE, load_or_create_secret, require_token
from server.middleware.cors import cors_middleware
from server.middleware.errors import error_response, json_errors
from server.middleware.gzip import gzip_middleware
from server.services import ledger
from server.services.deid import Pseudonymizer
from server.services.hub import Hub
from server.services.jobs import JobRunner
from server.services.sockets import attach_sockets, plain_websockets
from server.storage.artifacts import ArtifactStore
from server.storage.catalog import Catalog

log = logging.getLogger("theatrum")


async def health(request: web.Request) -> web.Response:
    runner: JobRunner = request.app["jobs"]
    return web.json_response({"status": "ok", "queued_jobs": runner.queued_count()})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/health", health),
        web.get("/api/openapi.json", openapi_handler),
        web.get("/api/studies", studies.list_studies),
        web.post("/api/studies", studies.upload_study),
        web.get("/api/studies/{study_id}", studies.get_study),
        web.delete("/api/studies/{study_id}", studies.delete_study),
        web.post("/api/studies/{study_id}/meshes", studies.request_meshes),
        web.get("/api/studies/{study_id}/meshes", studies.list_meshes),
        web.get("/api/jobs/{job_id}", studies.get_job),
        web.delete("/api/jobs/{job_id}", studies.cancel_job),
        web.get("/api/meshes/{mesh_id}.glb", studies.get_mesh_glb),
        web.get("/api/meshes/{mesh_id}", studies.get_mesh),
        web.get("/api/pacs/search", pacs.search),
        web.post("/api/pacs/import", pacs.import_study),
        web.post("/api/rooms", rooms.create_room),
        web.get("/api/rooms", rooms.list_rooms),
        web.get("/api/rooms/{room_id}", rooms.get_room),
        web.post("/api/rooms/{room_id}/close", rooms.close_room),
        web.post("/api/rooms/{room_id}/invites", rooms.create_invite),
        web.get("/api/rooms/{room_id}/invites/{role}.png", rooms.invite_qr),
        web.get("/api/rooms/{room_id}/events", rooms.get_events),
        web.post("/api/join", rooms.join),
        *ledger.routes(),
    ]


async def _api_not_found(request: web.Request) -> web.Response:
    return error_response(404, "not_found", f"no endpoint {request.method} {request.path}")


def build_app(settings: Settings) -> web.Application:
    data = Path(settings.data)
    data.mkdir(parents=True, exist_ok=True)
    metrics = Metrics()
    app = web.Application(
        middlewares=[metrics.middleware, plain_websockets, cors_middleware(settings.cors_origins),
                     gzip_middleware, json_errors, require_token],
        client_max_size=1024**2,  # JSON bodies; uploads are streamed and limited separately
    )
    app["settings"] = settings
    app["metrics"] = metrics
    app["admin_token"], app["admin_token_created"] = load_or_create_secret(data / ADMIN_TOKEN_FILE)
    key, _ = load_or_create_secret(data / "pseudonym-key")
    app["pseudonyms"] = Pseudonymizer(key.encode())
    app["catalog"] = Catalog(data / "catalog.sqlite")
    app["store"] = ArtifactStore(data / "objects")
    app["tmp"] = data / "tmp"

    app.add_routes(routes())
    app.router.add_get("/metrics", metrics.handle)
    app.router.add_route("*", "/api/{tail:.*}", _api_not_found)
    sio = attach_sockets(app, settings)
    app["sio"] = sio
    app["hub"] = Hub(sio, data, settings, metrics, app["pseudonyms"])
    app["ledger"] = ledger.LedgerService.open(data, ledger.LedgerConfig.from_settings(settings),
                                              ledger.hub_logs(app["hub"]))
    app["hub"].ledger = app["ledger"]
    app["jobs"] = JobRunner(
        app["catalog"],
        spec_for=lambda job: studies.job_spec(app, job),
        on_mesh=lambda job, mesh: studies.record_mesh(app, job, mesh),
        workers=settings.worker_count,
        max_queued=settings.max_queued_jobs,
        on_update=lambda job: studies.push_job_update(app, job),
        metrics=metrics,
    )
    _add_static(app, settings.web_client)
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_cleanup)
    return app


def _add_static(app: web.Application, root: Path) -> None:
    """Serve the web client: index.html at "/", its modules at "/src/", the vendored npm folders at "/vendor/".

    aiohttp's static routes resolve every path inside their folder and refuse ``..`` and (with
    follow_symlinks=False) symlinks that lead out of it.
    """
    # The folders of web-client/node_modules the client's import map points at: three's build and its
    # examples/jsm (loaders, controls, WebXR helpers, the Draco decoder), socket.io-client's ESM build, and
    # IWER's module build (loaded only behind the ?xr-emulate test switch). Nothing else.
    vendor = ("three/build", "three/examples/jsm", "socket.io-client/dist", "iwer/build")
    index = root / "index.html"
    if index.exists():
        async def index_handler(request: web.Request) -> web.FileResponse:
            return web.FileResponse(index, headers={"Cache-Control": "no-cache"})

        app.router.add_get("/", index_handler)
        src = root / "src"
        if src.is_dir():
            app.router.add_static("/src/", src, follow_symlinks=False)
        modules = root / "node_modules"
        for folder in vendor:
            path = modules / folder
            if path.is_dir():
                app.router.add_static(f"/vendor/{folder}/", path, follow_symlinks=False)


async def _startup(app: web.Application) -> None:
    removed = app["store"].remove_partials()
    if removed:
        log.warning("removed %d partial artifact file(s) left by an earlier crash", removed)
    tmp: Path = app["tmp"]
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, exist_ok=True)
    await app["jobs"].start()
    for live in app["hub"].rooms.values():
        app["ledger"].watch(live.room.log)
    await app["ledger"].start()
    await app["hub"].start()


async def _shutdown(app: web.Application) -> None:
    await app["hub"].shutdown()  # close the sockets; no leaves are logged, clients reconnect to the next server


async def _cleanup(app: web.Application) -> None:
    await app["ledger"].stop()
    await app["hub"].stop()
    await app["jobs"].stop()
    app["catalog"].close()


__all__ = ["build_app", "routes", "socketio"]

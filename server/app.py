"""The application: one aiohttp app with python-socketio mounted, composed explicitly from its parts.

`build_app(settings)` opens the stores in the data folder (catalog, artifacts, room database, ledger, keys),
builds the services on them (imports, mesh requests, jobs, the ledger service, the session hub, the PACS),
lists every route and middleware, and serves the web client's files. Nothing registers itself behind the
scenes: each part is typed state (server/appkeys.py) that the app sets here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
from functools import partial
from pathlib import Path

from aiohttp import web

from reconstruction.deflate import DEFAULT_MAX_INFLATED_BYTES
from reconstruction.sources import ZipLimits
from server.api import invites, jobs, ledger, meshes, pacs, report, rooms, slices, studies, system, voice
from server.api.errors import error_response
from server.api.views import job_view
from server.appkeys import (
    ADMIN_TOKEN,
    ADMIN_TOKEN_CREATED,
    ARTIFACTS,
    AUTOIMPORT,
    CATALOG,
    HUB,
    JOBS,
    LEDGER,
    LIBRARY,
    MESH_REQUESTS,
    METRICS,
    PACS,
    PSEUDONYMS,
    RECEIVER,
    ROOM_LOGS,
    SETTINGS,
    SIO,
    SLICES,
    TMP,
    UNVERIFIED_ROOMS,
)
from server.config import Settings, SettingsError
from server.metrics import Metrics
from server.middleware.auth import require_token
from server.middleware.cors import cors_middleware
from server.middleware.errors import json_errors
from server.middleware.forwarded import forwarded_middleware
from server.middleware.gzip import gzip_middleware
from server.middleware.metrics import metrics_middleware
from server.middleware.websockets import plain_websockets
from server.services import autoimport, growing, imports, sockets
from server.services.autoimport import build_default_meshes
from server.services.deid import Pseudonymizer
from server.services.fanout import Fanout
from server.services.growing import GrowRequests
from server.services.hub import Hub
from server.services.imports import Library
from server.services.invites import INVITE_KEY_FILE, InviteSigner
from server.services.job_queue import RedisJobs
from server.services.job_worker import spec_for
from server.services.jobs import JobRunner
from server.services.ledger import LedgerConfig, LedgerService
from server.services.meshes import MeshRequests, record_mesh
from server.services.pacs import REF_KEY_FILE, Pacs, PacsConfig, RefCodec
from server.services.receiver import DicomPortError, DicomReceiver, parse_peers
from server.services.slices import LoadedSeries, SliceService
from server.services.volumes import VolumeCache
from server.storage.artifacts import ArtifactStore
from server.storage.catalog import Catalog
from server.storage.files import make_private
from server.storage.keys import ADMIN_TOKEN_FILE, load_or_create_secret
from server.storage.roomdb import ROOM_DB, RoomDatabase

log = logging.getLogger("theatrum")

PSEUDONYM_KEY_FILE = "pseudonym-key"
SHARED_FILE_GRACE_S = 3600.0  # with several processes, files younger than this may be another's import


def routes() -> list[web.RouteDef]:
    """Every route of the HTTP API."""
    return [*system.routes(), *studies.routes(), *meshes.routes(), *jobs.routes(), *pacs.routes(),
            *rooms.routes(), *slices.routes(), *invites.routes(), *ledger.routes(), *report.routes(),
            *voice.routes()]


async def _api_not_found(request: web.Request) -> web.Response:
    return error_response(404, "not_found", f"no endpoint {request.method} {request.path}")


def build_app(settings: Settings) -> web.Application:
    data = Path(settings.data)
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    metrics = Metrics()
    app = web.Application(
        middlewares=[forwarded_middleware(settings.forwarded_allow_ips), metrics_middleware(metrics),
                     plain_websockets, cors_middleware(settings.cors_origins),
                     gzip_middleware, json_errors, require_token],
        client_max_size=1024**2,  # JSON bodies; uploads are streamed and limited separately
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[ADMIN_TOKEN], app[ADMIN_TOKEN_CREATED] = load_or_create_secret(data / ADMIN_TOKEN_FILE)
    pseudonyms = app[PSEUDONYMS] = Pseudonymizer(load_or_create_secret(data / PSEUDONYM_KEY_FILE)[0].encode())
    if settings.database_url and not settings.redis_url:
        raise SettingsError("THEATRUM_DATABASE_URL needs THEATRUM_REDIS_URL too: several processes share their job "
                            "queue and lobby events through Redis")
    catalog = app[CATALOG] = Catalog(settings.database_url or data / "catalog.sqlite")
    store = app[ARTIFACTS] = ArtifactStore(data / "objects")
    # Uploads in progress. Processes that share the data folder each have their own (named by host and pid).
    app[TMP] = data / "tmp" / f"{socket.gethostname()}-{os.getpid()}" if settings.database_url else data / "tmp"
    app[LIBRARY] = Library(catalog, store, pseudonyms,
                           ZipLimits(max_bytes=settings.max_unzipped_bytes, max_ratio=settings.max_zip_ratio),
                           max_inflated_bytes=min(DEFAULT_MAX_INFLATED_BYTES, settings.max_upload_bytes))
    app[PACS] = Pacs(PacsConfig(settings.pacs_url, settings.pacs_user, settings.pacs_password,
                                settings.max_upload_bytes),
                     RefCodec(load_or_create_secret(data / REF_KEY_FILE)[0]))

    app.add_routes(routes())
    app.router.add_get("/metrics", system.metrics)
    app.router.add_route("*", "/api/{tail:.*}", _api_not_found)
    sio = app[SIO] = sockets.socket_server(app, settings)
    app[LEDGER] = LedgerService.open(data, LedgerConfig.from_settings(settings), settings.database_url or None)
    invite_key, _ = load_or_create_secret(data / INVITE_KEY_FILE)
    fanout = Fanout(sio, settings.socket_max_queue_bytes, on_drop=metrics.dropped_sockets.inc)
    hub = app[HUB] = Hub(fanout, RoomDatabase(settings.database_url or data / ROOM_DB),
                         InviteSigner(invite_key.encode()), app[LEDGER], settings, metrics, pseudonyms)
    app[ROOM_LOGS] = hub.log_of
    app[UNVERIFIED_ROOMS] = hub.unverified
    sockets.handle(sio, hub, app[ADMIN_TOKEN], metrics)

    async def job_changed(job: dict) -> None:
        await sio.emit("job", job_view(job), room=sockets.ADMIN_ROOM)
        if growing.is_grow(job):
            await hub.grow_changed(job)

    async def worker_job_changed(job: dict) -> None:  # the worker has sent the lobby's event itself
        if job["state"] == "cancelled":
            await sio.emit("job", job_view(job), room=sockets.ADMIN_ROOM, ignore_queue=True)
        if growing.is_grow(job):
            await hub.grow_changed(job)

    if settings.redis_url:
        app[JOBS] = RedisJobs(catalog, settings.redis_url, max_queued=settings.max_queued_jobs,
                              on_update=worker_job_changed, metrics=metrics)
    else:
        app[JOBS] = JobRunner(catalog, spec_for=partial(spec_for, catalog, store),
                              on_mesh=partial(record_mesh, catalog), workers=settings.worker_count,
                              max_queued=settings.max_queued_jobs,
                              on_update=job_changed, metrics=metrics)
    app[MESH_REQUESTS] = MeshRequests(catalog, app[JOBS])
    hub.grow = GrowRequests(catalog, app[JOBS])
    app[SLICES] = SliceService(catalog, store, VolumeCache[LoadedSeries](settings.volume_cache_bytes,
                                                                         lambda loaded: loaded.nbytes))
    widened = make_private(data)  # patient data: the owner's alone (the databases and keys just opened too)
    if widened:
        log.warning("%s: %d file(s) or folder(s) were readable by others; now they are not", data, widened)
    if settings.dicom_port:
        app[RECEIVER] = _receiver(app, settings)
    _add_static(app, settings.web_client)
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_cleanup)
    return app


def _receiver(app: web.Application, settings: Settings) -> DicomReceiver:
    """The DICOM C-STORE receiver: what it imports gets its default meshes, and the lobby is told."""
    loop_of: dict[str, asyncio.AbstractEventLoop] = {}

    async def imported(result: dict) -> None:
        build_default_meshes(result, app[MESH_REQUESTS])
        for study in result["studies"]:
            await app[SIO].emit("studies", {"study_id": study["study_id"], "source": "dicom"}, room=sockets.ADMIN_ROOM)

    def on_imported(result: dict) -> None:  # in an association's thread
        asyncio.run_coroutine_threadsafe(imported(result), loop_of["loop"])

    async def start(_app: web.Application) -> None:
        loop_of["loop"] = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(receiver.start)
        except OSError as error:
            raise DicomPortError(f"cannot listen for DICOM on {receiver.host}:{receiver.port}: "
                                 f"{error.strerror or error}") from None

    async def stop(_app: web.Application) -> None:
        await asyncio.to_thread(receiver.stop)

    receiver = DicomReceiver(app[LIBRARY], settings.dicom_host or settings.host, settings.dicom_port,
                             settings.ae_title, parse_peers(settings.dicom_peers), settings.dicom_max_associations,
                             settings.max_upload_bytes, app[TMP], on_imported)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return receiver


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
    shared = bool(app[SETTINGS].database_url)  # other processes share the folder: leave their recent files
    removed = app[ARTIFACTS].remove_partials(SHARED_FILE_GRACE_S if shared else 0.0)
    if removed:
        log.warning("removed %d partial artifact file(s) left by an earlier crash", removed)
    orphans = await asyncio.to_thread(imports.sweep_orphans, app[LIBRARY], SHARED_FILE_GRACE_S if shared else 0.0)
    if orphans:
        log.warning("removed %d stored file(s) that no study refers to (an import an earlier crash stopped)",
                    orphans)
    cleaned = await asyncio.to_thread(imports.clean_stored_descriptions, app[LIBRARY])
    if cleaned:
        log.warning("cleaned the descriptions of %d study(ies) stored before descriptions were cleaned of the "
                    "patient's identifiers", cleaned)
    tmp = app[TMP]
    if tmp.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    if shared:
        _remove_dead_uploads(tmp)
    tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
    await app[JOBS].start()
    await app[HUB].start()  # the ledger follows every room from here
    await app[LEDGER].start()


def _remove_dead_uploads(tmp: Path) -> None:
    """Remove the upload folders of this host's processes that are gone (folders <host>-<pid> beside `tmp`)."""
    host = socket.gethostname()
    for folder in tmp.parent.glob(f"{host}-*") if tmp.parent.exists() else ():
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def import_on_start(app: web.Application) -> None:
    """Start importing the studies named in the settings (THEATRUM_IMPORTS, --import) in the background."""
    task = autoimport.import_in_background([Path(p) for p in app[SETTINGS].imports], app[LIBRARY],
                                           app[MESH_REQUESTS])
    if task is not None:
        app[AUTOIMPORT] = task


async def _shutdown(app: web.Application) -> None:
    await app[HUB].shutdown()  # close the sockets; no leaves are logged, clients reconnect to the next server


async def _cleanup(app: web.Application) -> None:
    await app[LEDGER].stop()
    await app[HUB].stop()
    await app[JOBS].stop()
    app[LEDGER].close()
    app[CATALOG].close()

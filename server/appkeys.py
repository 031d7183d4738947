"""The application's typed state: one `web.AppKey` per part that build_app composes (aiohttp checks the type)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import socketio
from aiohttp import web

if TYPE_CHECKING:  # the parts import the keys, not the other way round
    from sessions.log import EventLog

SETTINGS = web.AppKey("settings", "Settings")
METRICS = web.AppKey("metrics", "Metrics")
ADMIN_TOKEN = web.AppKey("admin_token", str)
ADMIN_TOKEN_CREATED = web.AppKey("admin_token_created", bool)
PSEUDONYMS = web.AppKey("pseudonyms", "Pseudonymizer")
CATALOG = web.AppKey("catalog", "Catalog")
ARTIFACTS = web.AppKey("artifacts", "ArtifactStore")
TMP = web.AppKey("tmp", Path)
SIO = web.AppKey("sio", socketio.AsyncServer)
HUB = web.AppKey("hub", "Hub")
LEDGER = web.AppKey("ledger", "LedgerService")
JOBS = web.AppKey("jobs", "JobRunner | RedisJobs")  # one process: JobRunner; several: RedisJobs
ROOM_LOGS = web.AppKey("room_logs", Callable[[str], "EventLog | None"])
UNVERIFIED_ROOMS = web.AppKey("unverified_rooms", dict)  # room -> why its stored tree cannot be vouched for
AUTOIMPORT = web.AppKey("autoimport", asyncio.Task)
LIBRARY = web.AppKey("library", "Library")
MESH_REQUESTS = web.AppKey("mesh_requests", "MeshRequests")
PACS = web.AppKey("pacs", "Pacs")
RECEIVER = web.AppKey("receiver", "DicomReceiver")  # only when THEATRUM_DICOM_PORT is set
SLICES = web.AppKey("slices", "SliceService")

"""HTTP handlers of a room's consult record (DICOM SR): download it, or store it to the PACS by STOW-RS. Admin
only (no invite route reaches them). The record itself is server/services/report.py.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from server.api.rooms import room_or_404
from server.appkeys import ARTIFACTS, CATALOG, LEDGER, PACS
from server.services.report import MEDIA_TYPE, ConsultRecord, consult_record, room_record


async def _record(request: web.Request) -> ConsultRecord:
    live = room_or_404(request)
    app = request.app
    async with live.lock:  # the checkpoint and the annotations it covers are one moment of the room
        made = room_record(live.room, app[LEDGER], app[CATALOG])
    return await asyncio.to_thread(consult_record, made, app[CATALOG], app[ARTIFACTS])


async def get_report(request: web.Request) -> web.Response:
    """GET /api/rooms/{room_id}/report.dcm: the room's consult record, at a checkpoint covering its head."""
    record = await _record(request)
    return web.Response(body=record.to_bytes(), content_type=MEDIA_TYPE, headers={
        "Content-Disposition": f'attachment; filename="{record.filename}"', "Cache-Control": "no-store"})


async def send_report(request: web.Request) -> web.Response:
    """POST /api/rooms/{room_id}/report/send: store the consult record on the configured PACS (STOW-RS)."""
    record = await _record(request)
    pacs = request.app[PACS]
    await pacs.store(record.dataset)
    return web.json_response({"room": record.room, "checkpoint": record.size, "items": record.items,
                              "sop_instance_uid": str(record.dataset.SOPInstanceUID), "stored": True})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/rooms/{room_id}/report.dcm", get_report),
        web.post("/api/rooms/{room_id}/report/send", send_report),
    ]

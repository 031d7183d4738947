"""HTTP handlers of the PACS: a de-identified study search, and an import that retrieves a study into the
library. The DICOMweb side is server/services/pacs.py; progress goes to the admin sockets as `pacs` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import uuid
from datetime import date

import socketio
from aiohttp import web

from server.api.errors import ApiError
from server.api.params import read_json
from server.appkeys import LIBRARY, PACS, SIO, TMP
from server.services import imports
from server.services.pacs import REF_TTL_S, UID, RefCodec

DEFAULT_LIMIT, MAX_LIMIT = 50, 200
# QIDO-RS filters the operator may use, with the longest value each VR allows (LO 64, SH 16, CS 16).
TEXT_FILTERS = {"PatientID": 64, "AccessionNumber": 16, "StudyDescription": 64}
QUERY_PARAMS = frozenset({*TEXT_FILTERS, "StudyDate", "ModalitiesInStudy", "limit"})
DICOM_DATE = r"\d{8}"
STUDY_DATE = re.compile(rf"^(?P<start>{DICOM_DATE})?(?P<range>-)?(?P<end>{DICOM_DATE})?$")
MODALITY = re.compile(r"^[A-Z0-9_]{1,16}$")
TEXT_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")  # a backslash separates values; control characters never


def _bad(detail: str) -> ApiError:
    return ApiError(400, "bad_parameter", detail)


def _check_date(value: str) -> str:
    m = STUDY_DATE.match(value)
    if not m or not (m["start"] or m["end"]) or (m["end"] and not m["range"]):
        raise _bad("StudyDate must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD (either end may be open)")
    days = []
    for part in (m["start"], m["end"]):
        if part:
            try:
                days.append(date(int(part[:4]), int(part[4:6]), int(part[6:])))
            except ValueError:
                raise _bad(f"StudyDate {part} is not a calendar date") from None
    if len(days) == 2 and days[0] > days[1]:
        raise _bad("StudyDate range ends before it starts")
    return value


def search_filters(query) -> tuple[dict[str, str], int]:
    """QIDO-RS filters and the limit from the request's query string; 400 on anything unknown or malformed.

    Requires ``query`` to be a multidict (aiohttp's ``request.query``). Empty values mean "no filter".
    """
    unknown = sorted(set(query) - QUERY_PARAMS)
    if unknown:
        raise _bad(f"unknown parameter(s) {', '.join(unknown)}; use {', '.join(sorted(QUERY_PARAMS))}")
    filters: dict[str, str] = {}
    limit = DEFAULT_LIMIT
    for name in set(query):
        values = query.getall(name)
        if len(values) > 1:
            raise _bad(f"{name} is given {len(values)} times")
        value = values[0].strip()
        if not value:
            continue
        if name == "limit":
            if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
                raise _bad(f"limit must be an integer from 1 to {MAX_LIMIT}")
            limit = int(value)
        elif name == "StudyDate":
            filters[name] = _check_date(value)
        elif name == "ModalitiesInStudy":
            if not MODALITY.match(value.upper()):
                raise _bad("ModalitiesInStudy must be one modality code such as CT or MR")
            filters[name] = value.upper()
        else:
            if len(value) > TEXT_FILTERS[name] or TEXT_FORBIDDEN.search(value):
                raise _bad(f"{name} must be at most {TEXT_FILTERS[name]} characters, without backslashes "
                           "or control characters (* and ? are wildcards)")
            filters[name] = value
    return filters, limit


async def search(request: web.Request) -> web.Response:
    """GET /api/pacs/search: a QIDO-RS study search, answered with de-identified summaries and refs."""
    filters, limit = search_filters(request.query)
    return web.json_response({"studies": await request.app[PACS].search(filters, limit)})


def requested_study_uid(refs: RefCodec, body: dict) -> str:
    """The StudyInstanceUID an import body names by ``ref`` or by ``study_instance_uid``; else a 400."""
    extra = sorted(set(body) - {"ref", "study_instance_uid"})
    if extra:
        raise _bad(f"unknown field(s): {', '.join(extra)}")
    if len(body) != 1:
        raise _bad("send exactly one of ref (from /api/pacs/search) or study_instance_uid")
    if "ref" in body:
        ref = body["ref"]
        if not isinstance(ref, str) or not ref or len(ref) > 1024:
            raise _bad("ref must be a string from /api/pacs/search")
        uid = refs.resolve(ref)
        if uid is None:
            raise ApiError(400, "unknown_ref",
                           f"the ref is unknown or expired (refs last {REF_TTL_S // 3600} h): search again")
        return uid
    uid = body["study_instance_uid"]
    if not isinstance(uid, str) or len(uid) > 64 or not UID.match(uid):
        raise _bad("study_instance_uid must be a DICOM UID (digits and dots, at most 64 characters)")
    return uid


class ImportProgress:
    """Socket.io ``pacs`` events for one import, at most about one per percent."""

    def __init__(self, sio: socketio.AsyncServer, import_id: str) -> None:
        self._sio = sio
        self.import_id = import_id
        self._last: tuple[str, int] | None = None

    async def __call__(self, stage: str, done: int, total: int | None, *, force: bool = False) -> None:
        step = max(1, (total or 1000) // 100)
        if self._last and self._last[0] == stage and (done == self._last[1] or (
                not force and done - self._last[1] < step)):
            return
        self._last = (stage, done)
        with contextlib.suppress(Exception):  # progress is best effort; the import itself must not fail on it
            await self._sio.emit("pacs", {"import_id": self.import_id, "stage": stage, "done": done,
                                          "total": total}, room="admin")


async def import_study(request: web.Request) -> web.Response:
    """POST /api/pacs/import: WADO-RS retrieve into a temp folder, then import it like an upload."""
    app = request.app
    pacs = app[PACS]
    uid = requested_study_uid(pacs.refs, await read_json(request))
    import_id = uuid.uuid4().hex[:16]
    progress = ImportProgress(app[SIO], import_id)
    folder = app[TMP] / f"pacs-{import_id}"
    try:
        folder.mkdir(parents=True)
        saved = await pacs.retrieve(uid, folder, progress)
        await progress("import", 0, saved, force=True)
        result = await asyncio.get_running_loop().run_in_executor(None, imports.import_folder, app[LIBRARY], folder)
        await progress("done", saved, saved, force=True)
    except Exception:
        await progress("failed", 0, None, force=True)
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    status = 201 if result["instances"]["added"] else 200
    return web.json_response({**result, "import_id": import_id}, status=status)


def routes() -> list[web.RouteDef]:
    return [web.get("/api/pacs/search", search), web.post("/api/pacs/import", import_study)]

"""PACS import over DICOMweb: a de-identified QIDO-RS study search, and a WADO-RS retrieve into the library.

The PACS is whatever answers DICOMweb at ``settings.pacs_url`` (Orthanc with its DICOMweb plugin, dcm4chee, a
vendor PACS), optionally with HTTP basic auth. dicomweb-client is synchronous (requests), so every call to it
runs in a thread executor and the event loop stays responsive.

Privacy: search results never carry the patient's name, ID, birth date, accession number, institution or the
original StudyInstanceUID. A study is named by ``ref``, an opaque handle that only this server can read: a
Fernet token (AES-128-CBC + HMAC-SHA256, from ``cryptography``) holding the StudyInstanceUID, keyed from a
server secret (``pacs-ref-key`` in the data dir, 0600) and valid for ``REF_TTL_S``. Being stateless, a ref
survives a restart, costs no memory, and works on every node that shares the secret; each search mints fresh
refs (random IV), so refs cannot be used to link two searches for the same patient. Nothing about the query
(which may hold a patient ID) or the PACS's answers is written to the log beyond status codes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from functools import partial
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pydicom
import requests
from aiohttp import web
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from dicomweb_client.api import DICOMwebClient

from server.middleware.auth import load_or_create_secret
from server.middleware.errors import ApiError, read_json
from server.services import imports as library

log = logging.getLogger("theatrum.pacs")

REF_KEY_FILE = "pacs-ref-key"
REF_TTL_S = 24 * 3600
DEFAULT_LIMIT, MAX_LIMIT = 50, 200
TIMEOUT_S = (5.0, 120.0)  # (connect, read between bytes): a slow PACS is fine, a dead one fails fast
ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)  # the stored bytes; asking to transcode breaks on J2K

# QIDO-RS filters the operator may use, with the longest value each VR allows (LO 64, SH 16, CS 16).
TEXT_FILTERS = {"PatientID": 64, "AccessionNumber": 16, "StudyDescription": 64}
QUERY_PARAMS = frozenset({*TEXT_FILTERS, "StudyDate", "ModalitiesInStudy", "limit"})
INCLUDE_FIELDS = ("StudyDate", "StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                  "NumberOfStudyRelatedInstances")
UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
DICOM_DATE = r"\d{8}"
STUDY_DATE = re.compile(rf"^(?P<start>{DICOM_DATE})?(?P<range>-)?(?P<end>{DICOM_DATE})?$")
MODALITY = re.compile(r"^[A-Z0-9_]{1,16}$")
TEXT_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")  # a backslash separates values; control characters never

# Tags of the study-level QIDO answer (DICOM JSON is keyed by tag).
STUDY_INSTANCE_UID, STUDY_DATE_TAG, STUDY_DESCRIPTION = "0020000D", "00080020", "00081030"
MODALITIES_IN_STUDY, SERIES_COUNT, INSTANCE_COUNT = "00080061", "00201206", "00201208"

T = TypeVar("T")


class NotOnPacsError(Exception):
    """The PACS does not hold the requested study."""


# -- refs ---------------------------------------------------------------------------------------------------
class RefCodec:
    """Opaque, authenticated, expiring handles for StudyInstanceUIDs."""

    def __init__(self, secret: str, ttl_s: int = REF_TTL_S) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"theatrum pacs ref v1").derive(
            secret.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self._ttl_s = ttl_s

    def issue(self, study_uid: str) -> str:
        return self._fernet.encrypt(study_uid.encode()).decode()

    def resolve(self, ref: str) -> str | None:
        """The StudyInstanceUID inside ``ref``, or None if it is forged, damaged or older than the TTL."""
        try:
            uid = self._fernet.decrypt(ref.encode(), ttl=self._ttl_s).decode()
        except (InvalidToken, UnicodeError, ValueError):
            return None
        return uid if UID.match(uid) else None


def ref_codec(app: web.Application) -> RefCodec:
    secret, _ = load_or_create_secret(Path(app["settings"].data) / REF_KEY_FILE)
    return RefCodec(secret)


# -- the PACS connection ------------------------------------------------------------------------------------
@contextlib.contextmanager
def pacs_connection(app: web.Application) -> Iterator[DICOMwebClient]:
    """A DICOMweb client for the configured PACS, its HTTP session closed on exit; 503 ``no_pacs`` if none."""
    settings = app["settings"]
    url = settings.pacs_url.strip().rstrip("/")
    if not url:
        raise ApiError(503, "no_pacs", "no PACS is configured: set THEATRUM_PACS_URL to its DICOMweb root")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(503, "no_pacs", "THEATRUM_PACS_URL is not an http(s) URL of a DICOMweb root")
    with requests.Session() as session:
        if settings.pacs_user:
            session.auth = (settings.pacs_user, settings.pacs_password)
        try:
            client = DICOMwebClient(url, session=session, timeout=TIMEOUT_S)
        except ValueError:
            raise ApiError(503, "no_pacs", "THEATRUM_PACS_URL is not a URL dicomweb-client accepts") from None
        # An interactive request: retry a busy or unreachable PACS once, after 0.5 s, not for 15 s.
        client.set_http_retry_params(max_attempts=2, wait_exponential_multiplier=250)
        yield client


def _pacs_name(app: web.Application) -> str:
    parts = urlsplit(app["settings"].pacs_url.strip())
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def pacs_error(app: web.Application, error: Exception, action: str) -> ApiError:
    """A 502 ``pacs_unavailable`` for a failed PACS call; its detail never repeats the query."""
    where = _pacs_name(app)
    if isinstance(error, requests.HTTPError) and error.response is not None:
        status = error.response.status_code
        hint = " (check THEATRUM_PACS_USER/PASSWORD)" if status in (401, 403) else ""
        detail = f"the PACS at {where} answered HTTP {status} to the {action}{hint}"
    elif isinstance(error, requests.Timeout):
        detail = f"the PACS at {where} did not answer the {action} in time"
    elif isinstance(error, requests.ConnectionError):
        detail = f"cannot connect to the PACS at {where}"
    else:  # a malformed answer: not JSON, a broken multipart body, a part that is not DICOM
        detail = f"the PACS at {where} sent a malformed answer to the {action} ({type(error).__name__})"
    log.warning("PACS %s failed: %s", action, detail)
    return ApiError(502, "pacs_unavailable", detail)


PACS_FAILURES = (requests.RequestException, ValueError, KeyError, pydicom.errors.InvalidDicomError)


async def in_thread(app: web.Application, action: str, fn: Callable[..., T], *args) -> T:
    """Run a blocking PACS call in the default executor, mapping its failures to a 502."""
    try:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
    except (ApiError, NotOnPacsError):
        raise
    except PACS_FAILURES as e:
        raise pacs_error(app, e, action) from None


# -- search -------------------------------------------------------------------------------------------------
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


def _first(study: dict, tag: str):
    values = (study.get(tag) or {}).get("Value") or []
    return values[0] if values else None


def _count(study: dict, tag: str) -> int | None:
    value = _first(study, tag)
    try:  # IS: a JSON number from some servers, a string from others
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _iso_date(value) -> str | None:
    if not isinstance(value, str) or not re.fullmatch(DICOM_DATE, value):
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:])).isoformat()
    except ValueError:
        return None


def study_summary(study: dict, refs: RefCodec) -> dict | None:
    """The de-identified view of one QIDO-RS study result (DICOM JSON); None if it names no study."""
    uid = _first(study, STUDY_INSTANCE_UID)
    if not isinstance(uid, str) or not UID.match(uid):
        return None
    description = _first(study, STUDY_DESCRIPTION)
    modalities = (study.get(MODALITIES_IN_STUDY) or {}).get("Value") or []
    return {
        "ref": refs.issue(uid),
        "study_date": _iso_date(_first(study, STUDY_DATE_TAG)),
        "description": description if isinstance(description, str) else None,
        "modalities": sorted({m for m in modalities if isinstance(m, str) and m}),
        "series": _count(study, SERIES_COUNT),
        "instances": _count(study, INSTANCE_COUNT),
    }


async def search(request: web.Request) -> web.Response:
    """GET /api/pacs/search: a QIDO-RS study search, answered with de-identified summaries and refs."""
    app = request.app
    filters, limit = search_filters(request.query)
    with pacs_connection(app) as client:
        found = await in_thread(app, "study search", partial(client.search_for_studies, limit=limit,
                                                             fields=INCLUDE_FIELDS, search_filters=filters))
    if not isinstance(found, list):
        raise pacs_error(app, TypeError("not a list"), "study search")
    refs = ref_codec(app)
    studies = [s for s in (study_summary(r, refs) for r in found[:limit] if isinstance(r, dict)) if s]
    studies.sort(key=lambda s: s["study_date"] or "", reverse=True)
    return web.json_response({"studies": studies})


# -- import -------------------------------------------------------------------------------------------------
def requested_study_uid(app: web.Application, body: dict) -> str:
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
        uid = ref_codec(app).resolve(ref)
        if uid is None:
            raise ApiError(400, "unknown_ref",
                           f"the ref is unknown or expired (refs last {REF_TTL_S // 3600} h): search again")
        return uid
    uid = body["study_instance_uid"]
    if not isinstance(uid, str) or len(uid) > 64 or not UID.match(uid):
        raise _bad("study_instance_uid must be a DICOM UID (digits and dots, at most 64 characters)")
    return uid


def _expected_instances(client: DICOMwebClient, uid: str) -> int | None:
    """The study's instance count from QIDO-RS, or None if unknown; raises NotOnPacsError if absent."""
    found = client.search_for_studies(fields=("NumberOfStudyRelatedInstances",),
                                      search_filters={"StudyInstanceUID": uid})
    matches = [s for s in found if isinstance(s, dict) and _first(s, STUDY_INSTANCE_UID) == uid]
    if not matches:
        raise NotOnPacsError(uid)
    return _count(matches[0], INSTANCE_COUNT)


def _open_study(client: DICOMwebClient, uid: str) -> Iterator[pydicom.Dataset]:
    """Start the WADO-RS retrieve (one streamed multipart response); raises NotOnPacsError on 404."""
    try:
        return iter(client.iter_study(uid, media_types=ANY_TRANSFER_SYNTAX))
    except requests.HTTPError as e:
        if e.response is not None and e.response.status_code == 404:
            raise NotOnPacsError(uid) from None
        raise


def _save_next(instances: Iterator[pydicom.Dataset], folder: Path, n: int, uid: str) -> int | None:
    """Read the next instance off the stream, write it to ``folder``: its size, 0 if foreign, None at the end.

    Requires ``folder`` to exist. Only one instance is held in memory at a time.
    """
    ds = next(instances, None)
    if ds is None:
        return None
    if ds.get("StudyInstanceUID") != uid:
        return 0  # not part of the study asked for: never import what was not requested
    path = folder / f"{n:06d}.dcm"
    ds.save_as(path, enforce_file_format=False)
    return path.stat().st_size


class ImportProgress:
    """Socket.io ``pacs`` events for one import, at most about one per percent."""

    def __init__(self, app: web.Application, import_id: str) -> None:
        self._sio = app["sio"]
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


async def _retrieve(app: web.Application, client: DICOMwebClient, uid: str, folder: Path,
                    progress: ImportProgress) -> int:
    """Stream the study's instances into ``folder``, one file each; returns how many were saved."""
    loop = asyncio.get_running_loop()
    total = await in_thread(app, "study lookup", _expected_instances, client, uid)
    await progress("retrieve", 0, total, force=True)
    instances = await in_thread(app, "study retrieve", _open_study, client, uid)
    saved = received = 0
    limit = app["settings"].max_upload_bytes
    try:
        while True:
            try:
                size = await loop.run_in_executor(None, _save_next, instances, folder, saved + 1, uid)
            except (requests.RequestException, ValueError, pydicom.errors.InvalidDicomError) as e:
                raise pacs_error(app, e, "study retrieve") from None
            if size is None:
                break
            if size:
                saved += 1
                received += size
                if received > limit:
                    raise ApiError(413, "study_too_large",
                                   f"the study exceeds the upload limit of {limit} bytes")
            await progress("retrieve", saved, total)
    finally:
        close = getattr(instances, "close", None)
        if close is not None:
            # ValueError "generator already executing": we were cancelled while a thread reads it.
            with contextlib.suppress(ValueError):
                close()
    await progress("retrieve", saved, total, force=True)
    return saved


async def import_study(request: web.Request) -> web.Response:
    """POST /api/pacs/import: WADO-RS retrieve into a temp folder, then import it like an upload."""
    app = request.app
    uid = requested_study_uid(app, await read_json(request))
    import_id = uuid.uuid4().hex[:16]
    progress = ImportProgress(app, import_id)
    folder = Path(app["tmp"]) / f"pacs-{import_id}"
    try:
        with pacs_connection(app) as client:
            folder.mkdir(parents=True)
            try:
                saved = await _retrieve(app, client, uid, folder, progress)
            except NotOnPacsError:
                raise ApiError(404, "not_found", "the PACS has no such study") from None
        if not saved:
            raise ApiError(404, "not_found", "the PACS returned no instances of this study")
        await progress("import", 0, saved, force=True)
        result = await asyncio.get_running_loop().run_in_executor(None, library.import_folder, app, folder)
        await progress("done", saved, saved, force=True)
    except Exception:
        await progress("failed", 0, None, force=True)
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    status = 201 if result["instances"]["added"] else 200
    return web.json_response({**result, "import_id": import_id}, status=status)

"""The PACS over DICOMweb: a de-identified QIDO-RS study search, a WADO-RS retrieve into a folder, and a STOW-RS
store (the consult record going back to the patient's record).

The PACS is whatever answers DICOMweb at the configured root (Orthanc with its DICOMweb plugin, dcm4chee, a
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
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pydicom
import requests
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from dicomweb_client.api import DICOMwebClient

from reconstruction.descriptors import PatientIdentifiers, clean_descriptor
from server.services.errors import NotFound, TooLarge, Unavailable, UpstreamError

log = logging.getLogger("theatrum.pacs")

REF_KEY_FILE = "pacs-ref-key"
REF_TTL_S = 24 * 3600
TIMEOUT_S = (5.0, 120.0)  # (connect, read between bytes): a slow PACS is fine, a dead one fails fast
ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)  # the stored bytes; asking to transcode breaks on J2K
# The patient's identifiers are asked for only to strike them from the description (never passed on).
INCLUDE_FIELDS = ("StudyDate", "StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                  "NumberOfStudyRelatedInstances", "PatientName", "PatientID", "PatientBirthDate", "AccessionNumber")
UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
DICOM_DATE = r"\d{8}"

# Tags of the study-level QIDO answer (DICOM JSON is keyed by tag).
STUDY_INSTANCE_UID, STUDY_DATE_TAG, STUDY_DESCRIPTION = "0020000D", "00080020", "00081030"
MODALITIES_IN_STUDY, SERIES_COUNT, INSTANCE_COUNT = "00080061", "00201206", "00201208"
PATIENT_NAME, PATIENT_ID, BIRTH_DATE, ACCESSION_NUMBER = "00100010", "00100020", "00100030", "00080050"
PACS_FAILURES = (requests.RequestException, ValueError, KeyError, pydicom.errors.InvalidDicomError)

T = TypeVar("T")
Progress = Callable[..., Awaitable[None]]


class NotOnPacsError(Exception):
    """The PACS does not hold the requested study."""


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


@dataclass(frozen=True)
class PacsConfig:
    """Where the PACS answers DICOMweb, its basic-auth login, and the most a retrieve may bring (bytes)."""

    url: str
    user: str = ""
    password: str = ""
    max_bytes: int = 2 * 1024**3


class Pacs:
    """One configured PACS."""

    def __init__(self, config: PacsConfig, refs: RefCodec):
        self.config = config
        self.refs = refs

    @contextlib.contextmanager
    def connection(self) -> Iterator[DICOMwebClient]:
        """A DICOMweb client for the PACS, its HTTP session closed on exit. Raises Unavailable if none is set."""
        url = self.config.url.strip().rstrip("/")
        if not url:
            raise Unavailable("no_pacs", "no PACS is configured: set THEATRUM_PACS_URL to its DICOMweb root")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Unavailable("no_pacs", "THEATRUM_PACS_URL is not an http(s) URL of a DICOMweb root")
        with requests.Session() as session:
            if self.config.user:
                session.auth = (self.config.user, self.config.password)
            try:
                client = DICOMwebClient(url, session=session, timeout=TIMEOUT_S)
            except ValueError:
                raise Unavailable("no_pacs", "THEATRUM_PACS_URL is not a URL dicomweb-client accepts") from None
            # An interactive request: retry a busy or unreachable PACS once, after 0.5 s, not for 15 s.
            client.set_http_retry_params(max_attempts=2, wait_exponential_multiplier=250)
            yield client

    def _name(self) -> str:
        parts = urlsplit(self.config.url.strip())
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"

    def error(self, error: Exception, action: str) -> UpstreamError:
        """An UpstreamError (502 pacs_unavailable) for a failed PACS call; its detail never repeats the query."""
        where = self._name()
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
        return UpstreamError("pacs_unavailable", detail)

    async def in_thread(self, action: str, fn: Callable[..., T], *args) -> T:
        """Run a blocking PACS call in the default executor, mapping its failures to an UpstreamError."""
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except PACS_FAILURES as e:
            raise self.error(e, action) from None

    async def search(self, filters: Mapping[str, str], limit: int) -> list[dict]:
        """A QIDO-RS study search: de-identified summaries (with refs), newest first."""
        with self.connection() as client:
            found = await self.in_thread("study search", partial(client.search_for_studies, limit=limit,
                                                                 fields=INCLUDE_FIELDS, search_filters=dict(filters)))
        if not isinstance(found, list):
            raise self.error(TypeError("not a list"), "study search")
        studies = [s for s in (study_summary(r, self.refs) for r in found[:limit] if isinstance(r, dict)) if s]
        studies.sort(key=lambda s: s["study_date"] or "", reverse=True)
        return studies

    async def store(self, dataset: pydicom.Dataset) -> None:
        """Store one instance on the PACS by STOW-RS. Raises Unavailable (no PACS) or UpstreamError (the PACS
        failed or refused it; the detail names the PACS host and the HTTP status or DICOM failure reason)."""
        with self.connection() as client:
            answer = await self.in_thread("store", partial(client.store_instances, [dataset]))
        failed = answer.get("FailedSOPSequence") if answer is not None else None
        if failed:
            reason = failed[0].get("FailureReason")
            detail = f"the PACS at {self._name()} refused the instance (failure reason {reason})"
            log.warning("PACS store failed: %s", detail)
            raise UpstreamError("pacs_refused", detail)

    async def retrieve(self, uid: str, folder: Path, progress: Progress) -> int:
        """Stream the study's instances into `folder` (which must exist), one file each; returns how many.

        Raises NotFound (no such study on the PACS), TooLarge, Unavailable or UpstreamError.
        """
        with self.connection() as client:
            try:
                saved = await self._retrieve(client, uid, folder, progress)
            except NotOnPacsError:
                raise NotFound("not_found", "the PACS has no such study") from None
        if not saved:
            raise NotFound("not_found", "the PACS returned no instances of this study")
        return saved

    async def _retrieve(self, client: DICOMwebClient, uid: str, folder: Path, progress: Progress) -> int:
        """Stream the study's instances into ``folder``, one file each; returns how many were saved."""
        loop = asyncio.get_running_loop()
        total = await self.in_thread("study lookup", _expected_instances, client, uid)
        await progress("retrieve", 0, total, force=True)
        instances = await self.in_thread("study retrieve", _open_study, client, uid)
        saved = received = 0
        limit = self.config.max_bytes
        try:
            while True:
                try:
                    size = await loop.run_in_executor(None, _save_next, instances, folder, saved + 1, uid)
                except (requests.RequestException, ValueError, pydicom.errors.InvalidDicomError) as e:
                    raise self.error(e, "study retrieve") from None
                if size is None:
                    break
                if size:
                    saved += 1
                    received += size
                    if received > limit:
                        raise TooLarge("study_too_large", f"the study exceeds the upload limit of {limit} bytes")
                await progress("retrieve", saved, total)
        finally:
            close = getattr(instances, "close", None)
            if close is not None:
                # ValueError "generator already executing": we were cancelled while a thread reads it.
                with contextlib.suppress(ValueError):
                    close()
        await progress("retrieve", saved, total, force=True)
        return saved


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
    if isinstance(description, str):
        description = clean_descriptor(description, _patient(study))
    modalities = (study.get(MODALITIES_IN_STUDY) or {}).get("Value") or []
    return {
        "ref": refs.issue(uid),
        "study_date": _iso_date(_first(study, STUDY_DATE_TAG)),
        "description": description if isinstance(description, str) else None,
        "modalities": sorted({m for m in modalities if isinstance(m, str) and m}),
        "series": _count(study, SERIES_COUNT),
        "instances": _count(study, INSTANCE_COUNT),
    }


def _patient(study: dict) -> PatientIdentifiers:
    """The identifiers a QIDO answer carries (DICOM JSON: a PN value is {"Alphabetic": ...})."""
    name = _first(study, PATIENT_NAME)
    name = name.get("Alphabetic", "") if isinstance(name, dict) else ""
    values = [_first(study, tag) for tag in (PATIENT_ID, ACCESSION_NUMBER, BIRTH_DATE)]
    patient_id, accession, birth = (v if isinstance(v, str) else "" for v in values)
    return PatientIdentifiers(name if isinstance(name, str) else "", (patient_id, accession), birth)


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

"""The study library: receive an upload on disk, check it, and add its instances to the store and catalog.

An import either succeeds whole or stores nothing: every file is read and every volume series is assembled
(which decodes its pixels) before anything is moved into the store or written to the catalog. Instances are
stored content-addressed (``<sha256>.dcm``) and deduplicated by SOPInstanceUID and content hash, so uploading
the same study twice changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from reconstruction.assembly import assemble_volume
from reconstruction.errors import (
    InconsistentSeriesError,
    InputError,
    NonContiguousSeriesError,
    NoVolumeError,
    ReconstructionError,
)
from reconstruction.series import find_series
from reconstruction.sources import ZipLimits
from server.middleware.errors import ApiError

CHUNK = 1 << 16


# -- receiving ----------------------------------------------------------------------------------------------
async def receive_upload(request: web.Request, folder: Path, limit: int) -> int:
    """Stream the request body into ``folder`` (multipart parts or one raw body); returns bytes received.

    File names from the client are never used as paths: parts are saved as ``part-<n>``.
    """
    received = 0

    async def save(stream_read, path: Path) -> None:
        nonlocal received
        with open(path, "wb") as f:
            while chunk := await stream_read(CHUNK):
                received += len(chunk)
                if received > limit:
                    raise ApiError(413, "upload_too_large", f"the upload exceeds the limit of {limit} bytes")
                f.write(chunk)

    if request.content_type.startswith("multipart/"):
        n = 0
        try:
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue  # a nested multipart: not something a DICOM upload sends
                if part.filename is None and part.name not in ("file", "files", "zip"):
                    await part.release()
                    continue
                n += 1
                await save(part.read_chunk, folder / f"part-{n:06d}")
        except (ValueError, AssertionError, HttpProcessingError) as e:
            raise ApiError(400, "malformed_multipart", f"the multipart body cannot be parsed: {e}") from None
        if n == 0:
            raise ApiError(400, "empty_upload", "the multipart body holds no file parts")
    else:
        await save(request.content.read, folder / "part-000001")
        if received == 0:
            raise ApiError(400, "empty_upload", "the request body is empty")
    return received


# -- checking and storing -----------------------------------------------------------------------------------
def input_hash(shas: list[str]) -> str:
    """A series' content address: the hash of its instances' content hashes (order-free)."""
    return hashlib.sha256("\n".join(sorted(shas)).encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def import_folder(app: web.Application, folder: Path) -> dict:
    """Import every DICOM volume found under ``folder``; raises ApiError (4xx) and stores nothing on bad input."""
    settings = app["settings"]
    try:
        scan = find_series(
            [folder], zip_limits=ZipLimits(max_bytes=settings.max_unzipped_bytes, max_ratio=settings.max_zip_ratio)
        )
    except InputError as e:
        raise ApiError(400, "bad_input", _relative(str(e), folder)) from None
    skipped = [{"file": _relative(str(s.path), folder), "reason": s.reason} for s in scan.skipped]
    if not scan.series:
        not_dicom = [s for s in skipped if "not DICOM" in s["reason"] or "not a DICOM" in s["reason"]]
        code = "not_dicom" if not_dicom and len(not_dicom) == len(skipped) else "no_volume"
        detail = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:5]) or "no files"
        raise ApiError(400, code, f"no 3D DICOM series in the upload ({detail})")

    pseudo = app["pseudonyms"]
    accepted, rejected = [], []
    for series in scan.series:
        try:
            volume = assemble_volume(series, allow_gaps=True)
        except (InconsistentSeriesError, NonContiguousSeriesError, NoVolumeError) as e:
            rejected.append({"file": series.description or "series", "reason": e.problem})
            continue
        except ReconstructionError as e:  # a file that cannot be decoded: the upload is damaged
            raise ApiError(400, "bad_dicom", _relative(str(e), folder)) from None
        accepted.append((series, volume))
    skipped.extend(rejected)
    if not accepted:
        raise ApiError(400, "no_volume", "; ".join(f"{r['file']}: {r['reason']}" for r in rejected))

    catalog, store = app["catalog"], app["store"]
    added = duplicates = 0
    studies: dict[str, dict] = {}
    now = time.time()
    with catalog.transaction() as db:
        for series, volume in accepted:
            study_id = pseudo.study(series.study_instance_uid)
            study = studies.setdefault(study_id, {"modalities": set(), "series": []})
            study["modalities"].add(volume.modality)
            db.execute("INSERT OR IGNORE INTO studies (id, created_at, description, modalities) VALUES (?, ?, ?, '')",
                       (study_id, now, series.study_description or ""))
            shas = []
            for inst in series.instances:
                existing = db.execute("SELECT sha256 FROM instances WHERE sop_uid = ?",
                                      (inst.sop_instance_uid,)).fetchone()
                if existing:
                    duplicates += 1
                    shas.append(existing[0])
                    continue
                data = inst.ref.read_bytes()
                sha = store.put_bytes(data, ".dcm")
                db.execute("INSERT INTO instances (sop_uid, study_id, sha256, bytes) VALUES (?, ?, ?, ?)",
                           (inst.sop_instance_uid, study_id, sha, len(data)))
                shas.append(sha)
                added += 1
            series_id = pseudo.series(series.uid)
            spacing = [round(s, 6) for s in volume.spacing_mm]
            db.execute(
                "INSERT OR REPLACE INTO series (id, study_id, uid, modality, description, slices, rows, columns, "
                "spacing_mm, input_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (series_id, study_id, series.uid, volume.modality, volume.description, volume.shape[0],
                 volume.shape[1], volume.shape[2], json.dumps(spacing), input_hash(shas)),
            )
            study["series"].append({"id": series_id, "modality": volume.modality, "description": volume.description,
                                    "slices": volume.shape[0], "rows": volume.shape[1], "columns": volume.shape[2],
                                    "spacing_mm": spacing, "warnings": list(volume.warnings)})
        for study_id, study in studies.items():
            row = db.execute("SELECT modalities FROM studies WHERE id = ?", (study_id,)).fetchone()
            mods = set(filter(None, (row[0] if row else "").split("\\"))) | study["modalities"]
            db.execute("UPDATE studies SET modalities = ? WHERE id = ?", ("\\".join(sorted(mods)), study_id))
    result_studies = [{"study_id": sid, "series": s["series"]} for sid, s in studies.items()]
    return {
        "study_id": result_studies[0]["study_id"],
        "series": result_studies[0]["series"],
        "studies": result_studies,
        "instances": {"added": added, "duplicates": duplicates},
        "skipped": skipped,
    }


def unreferenced_files(app: web.Application, digests: list[str]) -> list[tuple[str, str]]:
    """(digest, suffix) pairs to delete after a study is removed: instances (.dcm) and meshes (.glb)."""
    out = []
    for d in digests:
        for suffix in (".dcm", ".glb"):
            if app["store"].exists(d, suffix):
                out.append((d, suffix))
    return out


def _relative(text: str, folder: Path) -> str:
    """Hide the server's temp folder from messages: name uploaded files relative to the upload."""
    return text.replace(str(folder) + "/", "").replace(str(folder), "upload")



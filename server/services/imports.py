"""Importing studies: check what a folder holds, then add its instances to the store and the catalog.

An import either succeeds whole or stores nothing: every file is read and every volume series is assembled
(which decodes its pixels) before anything is moved into the store or written to the catalog. Instances are
stored content-addressed (``<sha256>.dcm``) and deduplicated by SOPInstanceUID and content hash, so importing
the same study twice changes nothing. Uploads, PACS retrieves and the start-up import all come through here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pydicom

from reconstruction.assembly import assemble_volume
from reconstruction.deflate import DEFAULT_MAX_INFLATED_BYTES
from reconstruction.descriptors import PatientIdentifiers, clean_descriptor, identifiers_of
from reconstruction.errors import (
    InconsistentSeriesError,
    InputError,
    NonContiguousSeriesError,
    NoVolumeError,
    ReconstructionError,
)
from reconstruction.series import find_series
from reconstruction.sources import ZipLimits
from server.services.deid import Pseudonymizer
from server.services.errors import Invalid
from server.storage.artifacts import ArtifactStore
from server.storage.catalog import Catalog, SeriesRecord
from server.storage.errors import CorruptStoreError

_PATIENT = ["PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"]


@dataclass(frozen=True)
class Library:
    """What an import writes to (the catalog, the content-addressed store, the pseudonym key) and the limits
    of what it reads: zips, and how far one deflated DICOM file may inflate."""

    catalog: Catalog
    store: ArtifactStore
    pseudonyms: Pseudonymizer
    zip_limits: ZipLimits
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES


def input_hash(shas: list[str]) -> str:
    """A series' content address: the hash of its instances' content hashes (order-free)."""
    return hashlib.sha256("\n".join(sorted(shas)).encode()).hexdigest()


def import_folder(library: Library, folder: Path) -> dict:
    """Import every DICOM volume found under `folder`. Raises Invalid and stores nothing on bad input."""
    try:
        scan = find_series([folder], zip_limits=library.zip_limits, max_inflated_bytes=library.max_inflated_bytes)
    except InputError as e:
        raise Invalid("bad_input", _relative(str(e), folder)) from None
    skipped = [{"file": _relative(str(s.path), folder), "reason": s.reason} for s in scan.skipped]
    if not scan.series:
        not_dicom = [s for s in skipped if "not DICOM" in s["reason"] or "not a DICOM" in s["reason"]]
        code = "not_dicom" if not_dicom and len(not_dicom) == len(skipped) else "no_volume"
        detail = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:5]) or "no files"
        raise Invalid(code, f"no 3D DICOM series in the upload ({detail})")

    accepted, rejected = [], []
    for series in scan.series:
        try:
            volume = assemble_volume(series, allow_gaps=True)
        except (InconsistentSeriesError, NonContiguousSeriesError, NoVolumeError) as e:
            rejected.append({"file": series.description or "series", "reason": e.problem})
            continue
        except ReconstructionError as e:  # a file that cannot be decoded: the upload is damaged
            raise Invalid("bad_dicom", _relative(str(e), folder)) from None
        accepted.append((series, volume))
    skipped.extend(rejected)
    if not accepted:
        raise Invalid("no_volume", "; ".join(f"{r['file']}: {r['reason']}" for r in rejected))

    pseudo, added, duplicates = library.pseudonyms, 0, 0
    studies: dict[str, list[dict]] = {}
    with library.catalog.transaction() as batch:
        for series, volume in accepted:
            study_id = pseudo.study(series.study_instance_uid)
            batch.add_study(study_id, series.study_description or "", volume.modality)
            shas = []
            for instance in series.instances:
                known = batch.instance_sha256(instance.sop_instance_uid)
                if known is not None:
                    duplicates += 1
                    shas.append(known)
                    continue
                data = instance.ref.read_bytes()
                sha = library.store.put_bytes(data, ".dcm")
                batch.add_instance(instance.sop_instance_uid, study_id, sha, len(data))
                shas.append(sha)
                added += 1
            record = SeriesRecord(
                id=pseudo.series(series.uid), study_id=study_id, uid=series.uid, modality=volume.modality,
                description=volume.description, slices=volume.shape[0], rows=volume.shape[1],
                columns=volume.shape[2], spacing_mm=[round(s, 6) for s in volume.spacing_mm],
                input_hash=input_hash(shas))
            batch.put_series(record)
            studies.setdefault(study_id, []).append(
                {"id": record.id, "modality": record.modality, "description": record.description,
                 "slices": record.slices, "rows": record.rows, "columns": record.columns,
                 "spacing_mm": record.spacing_mm, "warnings": list(volume.warnings)})
    result_studies = [{"study_id": study_id, "series": series} for study_id, series in studies.items()]
    return {
        "study_id": result_studies[0]["study_id"],
        "series": result_studies[0]["series"],
        "studies": result_studies,
        "instances": {"added": added, "duplicates": duplicates},
        "skipped": skipped,
    }


def delete_study(library: Library, study_id: str) -> None:
    """Remove a study from the catalog, then the files no other study references."""
    for digest in library.catalog.delete_study(study_id):
        for suffix in (".dcm", ".glb"):
            library.store.delete(digest, suffix)


def sweep_orphans(library: Library) -> int:
    """Delete stored files no catalog row refers to (an import that a crash stopped between storing its files
    and committing its rows leaves such files, with full DICOM headers); returns how many. Requires that no
    import or job runs (the server calls it at start)."""
    referenced = library.catalog.referenced()
    removed = 0
    for digest, suffix, path in library.store.stored():
        if (digest, suffix) not in referenced:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def clean_stored_descriptions(library: Library) -> int:
    """Clean the descriptions of studies imported before descriptions were cleaned (PS3.15 clean descriptors):
    the patient's identifiers are read from one stored instance of each such study. Returns how many studies
    were cleaned. A study whose instances cannot be read keeps waiting for the next start."""
    catalog, cleaned = library.catalog, 0
    for study_id in catalog.studies_to_clean():
        study = catalog.study(study_id)
        instances = catalog.instances_of(study_id)
        if study is None:
            continue
        patient = PatientIdentifiers()
        if instances:
            try:
                path = library.store.verified_path(instances[0]["sha256"], ".dcm")
                patient = identifiers_of(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_PATIENT))
            except (OSError, CorruptStoreError, pydicom.errors.InvalidDicomError):
                continue
        series = {s["id"]: clean_descriptor(s["description"], patient) for s in catalog.series_of(study_id)}
        catalog.set_clean_descriptions(study_id, clean_descriptor(study["description"], patient), series)
        cleaned += 1
    return cleaned


def _relative(text: str, folder: Path) -> str:
    """Hide the server's temp folder from messages: name uploaded files relative to the upload."""
    return text.replace(str(folder) + "/", "").replace(str(folder), "upload")

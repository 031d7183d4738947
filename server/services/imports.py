"""Importing studies: check what a folder holds, then add its instances to the store and the catalog.

An import either succeeds whole or stores nothing: every file is read and every volume series is assembled
(which decodes its pixels) before anything is moved into the store or written to the catalog. Instances are
stored content-addressed (``<sha256>.dcm``) and deduplicated by SOPInstanceUID and content hash, so importing
the same study twice changes nothing. Uploads, PACS retrieves and the start-up import all come through here.

Segmentations (DICOM SEG, RTSTRUCT, NIfTI label maps: ``reconstruction.segmentation``) come through here too,
with their images or after them: each is matched to a series of its study (the upload's own series, then the
study's stored ones) by its DICOM references and then by geometry, placed on that series' grid, and stored
with its masks (``.npz``, what a structures job meshes) and one catalog row per structure. A segmentation that
matches no series of its study refuses the whole import. DICOM segmentations find their study by their
StudyInstanceUID; a NIfTI file, which references nothing, needs its series in the same upload or the study
named (``study``).
"""

from __future__ import annotations

import hashlib
import time
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
from reconstruction.segmentation import (
    Segmentation,
    SegmentationError,
    SegmentationMismatchError,
    find_segmentations,
)
from reconstruction.series import Series, find_series
from reconstruction.sources import ZipLimits
from reconstruction.structures import hex_color, masks_npz
from reconstruction.volume import Volume
from server.services.deid import Pseudonymizer
from server.services.errors import Invalid
from server.storage.artifacts import ArtifactStore
from server.storage.catalog import Catalog, SeriesRecord
from server.storage.errors import CorruptStoreError
from server.storage.files import remove_unless_recent

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


def instance_paths(catalog: Catalog, store: ArtifactStore, study_id: str) -> list[str]:
    """The stored files of every instance of a study (what the pipeline reads to rebuild its volumes)."""
    return [str(store.path_for(i["sha256"], ".dcm")) for i in catalog.instances_of(study_id)]


def input_hash(shas: list[str]) -> str:
    """A series' content address: the hash of its instances' content hashes (order-free)."""
    return hashlib.sha256("\n".join(sorted(shas)).encode()).hexdigest()


def import_folder(library: Library, folder: Path, study: str | None = None) -> dict:
    """Import every DICOM volume and segmentation found under `folder`; `study` is the study a segmentation
    without its images belongs to. Raises Invalid and stores nothing on bad input."""
    try:
        scan = find_series([folder], zip_limits=library.zip_limits, max_inflated_bytes=library.max_inflated_bytes)
        segmentations = find_segmentations([folder], zip_limits=library.zip_limits)
    except SegmentationError as e:
        raise Invalid("bad_segmentation", _relative(str(e), folder)) from None
    except InputError as e:
        raise Invalid("bad_input", _relative(str(e), folder)) from None
    if study is not None and library.catalog.study(study) is None:
        raise Invalid("not_found", f"no study {study!r} to add the upload to")
    segmentation_files = {str(ref) for seg in segmentations for ref in seg.files}
    skipped = [{"file": _relative(str(s.path), folder), "reason": s.reason} for s in scan.skipped
               if str(s.path) not in segmentation_files]
    if not scan.series and not segmentations:
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
    if not accepted and not segmentations:
        raise Invalid("no_volume", "; ".join(f"{r['file']}: {r['reason']}" for r in rejected))
    placed = [_place(library, seg, accepted, study, folder) for seg in segmentations]

    pseudo, added, duplicates = library.pseudonyms, 0, 0
    studies: dict[str, list[dict]] = {}
    with library.catalog.transaction() as batch:
        for series, volume in accepted:
            study_id = pseudo.study(series.study_instance_uid or series.uid)
            batch.add_study(study_id, series.study_description or "", volume.modality)
            shas = []
            for instance in series.instances:
                sop = instance.sop_instance_uid
                data = None
                if not sop:  # some exports empty every UID: the content names the instance
                    data = instance.ref.read_bytes()
                    sop = "sha256." + hashlib.sha256(data).hexdigest()
                known = batch.instance_sha256(sop)
                if known is not None:
                    duplicates += 1
                    shas.append(known)
                    continue
                data = data if data is not None else instance.ref.read_bytes()
                sha = library.store.put_bytes(data, ".dcm")
                batch.add_instance(sop, study_id, sha, len(data))
                shas.append(sha)
                added += 1
            record = SeriesRecord(
                id=pseudo.series(series.uid), study_id=study_id, uid=series.uid, modality=volume.modality,
                description=volume.description, slices=volume.shape[0], rows=volume.shape[1],
                columns=volume.shape[2], spacing_mm=[round(s, 6) for s in volume.spacing_mm],
                input_hash=input_hash(shas), warnings=tuple(volume.warnings))
            batch.put_series(record)
            studies.setdefault(study_id, []).append(
                {"id": record.id, "modality": record.modality, "description": record.description,
                 "slices": record.slices, "rows": record.rows, "columns": record.columns,
                 "spacing_mm": record.spacing_mm, "warnings": list(volume.warnings)})
        stored = [_store_segmentation(library, batch, *p) for p in placed]
    for row in stored:
        studies.setdefault(row["study_id"], [])
    result_studies = [{"study_id": study_id, "series": series} for study_id, series in studies.items()]
    return {
        "study_id": result_studies[0]["study_id"],
        "series": result_studies[0]["series"],
        "studies": result_studies,
        "segmentations": [segmentation_view(row) for row in stored],
        "instances": {"added": added, "duplicates": duplicates},
        "skipped": skipped,
    }


def segmentation_view(row: dict) -> dict:
    """A segmentation as listings show it: de-identified (pseudonymous ids; the names are the file's labels)."""
    return {"id": row["id"], "series_id": row["series_id"], "format": row["format"],
            "structures": [{key: s[key] for key in ("number", "name", "color", "volume_ml", "code")}
                           for s in row["structures"]]}


def _place(library: Library, segmentation: Segmentation, accepted: list[tuple[Series, Volume]], study: str | None,
           folder: Path) -> tuple[Segmentation, Series, Volume, list]:
    """The series a segmentation segments (the upload's, then its study's stored ones), its volume and the
    masks on it. Raises Invalid naming why no series fits."""
    name = _relative(segmentation.source, folder)
    study_id = study
    if study_id is None and segmentation.study_instance_uid:
        study_id = library.pseudonyms.study(segmentation.study_instance_uid)
    candidates: list[tuple[Series, Volume | None]] = [(s, v) for s, v in accepted]
    if study_id is not None and library.catalog.study(study_id) is not None:
        candidates += [(s, None) for s in _stored_series(library, study_id)]
    if not candidates:
        raise Invalid("no_matching_series", f"{name}: no series to place it on: upload it with its images, or "
                                            "into its study (POST /api/studies?study=ID)")
    reasons = []
    for series, volume in candidates:
        instances = frozenset(i.sop_instance_uid for i in series.instances)
        frame = series.slices[0].instance.frame_of_reference_uid
        why = segmentation.references_series(frame, series.series_instance_uid, instances)
        if why is None:
            try:
                volume = volume if volume is not None else assemble_volume(series, allow_gaps=True)
                return segmentation, series, volume, segmentation.masks_on(volume)
            except SegmentationMismatchError as e:
                why = e.problem
            except SegmentationError as e:
                raise Invalid("bad_segmentation", _relative(str(e), folder)) from None
            except ReconstructionError as e:
                why = e.problem
        reasons.append(f"{series.description or 'a series'}: {why}")
    raise Invalid("no_matching_series", f"{name} matches no series of its study ({'; '.join(reasons)})")


def _stored_series(library: Library, study_id: str) -> list[Series]:
    """The study's stored series (headers read again from the store)."""
    paths = [library.store.path_for(i["sha256"], ".dcm") for i in library.catalog.instances_of(study_id)]
    return find_series(paths, max_inflated_bytes=library.max_inflated_bytes).series if paths else []


def _store_segmentation(library: Library, batch, segmentation: Segmentation, series: Series, volume: Volume,
                        masks: list) -> dict:
    """Store a placed segmentation's files and masks, and add its rows. Requires the import's transaction."""
    files = []
    for ref in segmentation.files:
        name = str(ref).lower()
        suffix = ".nii.gz" if name.endswith(".gz") else ".nii" if segmentation.format == "NIfTI" else ".dcm"
        files.append({"digest": library.store.put_bytes(ref.read_bytes(), suffix), "suffix": suffix})
    masks_digest = library.store.put_bytes(masks_npz(volume, masks), ".npz")
    series_id = library.pseudonyms.series(series.uid)
    key = "\n".join([series_id, *sorted(f["digest"] for f in files)])
    row = {
        "id": "sg" + hashlib.sha256(key.encode()).hexdigest()[:22],
        "study_id": library.pseudonyms.study(series.study_instance_uid or series.uid),
        "series_id": series_id, "format": segmentation.format, "files": files, "masks": masks_digest,
        "structures": [{"number": m.structure.number, "name": m.structure.name, "color": hex_color(m.structure.color),
                        "code": dict(m.structure.code), "volume_ml": round(m.volume_ml(volume), 3)} for m in masks],
    }
    batch.add_segmentation(row)
    return row


def delete_study(library: Library, study_id: str) -> None:
    """Remove a study from the catalog, then the files no other study references."""
    for digest in library.catalog.delete_study(study_id):
        for suffix in (".dcm", ".glb", ".npz", ".nii", ".nii.gz"):
            library.store.delete(digest, suffix)


def sweep_orphans(library: Library, older_than: float = 0.0) -> int:
    """Delete stored files no catalog row refers to (an import that a crash stopped between storing its files
    and committing its rows leaves such files, with full DICOM headers); returns how many. Requires that no
    import or job runs (the server calls it at start), or `older_than` seconds longer than any import takes
    (processes that share the data folder: files younger than that are left alone)."""
    referenced, now = library.catalog.referenced(), time.time()
    return sum(remove_unless_recent(path, older_than, now) for digest, suffix, path in library.store.stored()
               if (digest, suffix) not in referenced)


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

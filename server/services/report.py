"""The consult record of a room: a DICOM SR of its annotations, cut at a signed checkpoint of its log, that goes
back to the patient's record (downloaded by the admin, or stored to the PACS by STOW-RS).

`room_record` (on the event loop, under the room's lock) cuts or reuses a checkpoint covering the room's head and
lists the annotations alive there with their citations and inclusion proofs (sessions/report.py; every proof is
verified before it is written); `consult_record` (in a thread) reads the source series' headers from the store
and writes the SR (server/services/sr.py).

Privacy: the SR carries the source patient and study modules, because it belongs in that patient's record. So it
is made for the admin only, never shown in a room, never logged, and a training room (de-identified data only)
refuses it (Conflict).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

from server.services.errors import Conflict, NotFound
from server.services.ledger import LedgerService
from server.storage.artifacts import ArtifactStore
from server.storage.catalog import Catalog
from server.storage.errors import CorruptStoreError
from sessions.ledger.merkle import ProofError, verify_inclusion
from sessions.ledger.note import Checkpoint
from sessions.report import Record, record_items
from sessions.room import Room, RoomMode

MEDIA_TYPE = "application/dicom"


@dataclass(frozen=True)
class ConsultRecord:
    """A room's SR: the dataset, the checkpoint size it is cut at, and how many annotations it holds."""

    room: str
    dataset: Dataset
    size: int
    items: int

    def to_bytes(self) -> bytes:
        """The DICOM file (Part 10, with its File Meta)."""
        out = io.BytesIO()
        self.dataset.save_as(out, enforce_file_format=True)
        return out.getvalue()

    @property
    def filename(self) -> str:
        return f"{self.room}-record-{self.size}.dcm"


@dataclass(frozen=True)
class RoomRecord:
    """What a room's log says at a checkpoint covering its head: the record, the checkpoint, whether the room
    is closed (the record is complete), and the source series (its catalog row)."""

    room: str
    record: Record
    checkpoint: Checkpoint
    closed: bool
    series: dict


def room_record(room: Room, ledger: LedgerService, catalog: Catalog) -> RoomRecord:
    """The room's record at a checkpoint covering its head (cut now if needed). Call it on the room's thread.

    Raises Conflict (a training room, or no annotation), NotFound (the source series left the library),
    CorruptStoreError (a stored proof does not verify) or StorageError (no checkpoint can be cut).
    """
    if room.mode is RoomMode.TRAINING:
        raise Conflict("training_room", f"room {room.id} is a training room: its data is de-identified, and the "
                                        "consult record carries the patient's identity back to the patient's record")
    stored = ledger.ensure_checkpoint(room.log)
    size, root = stored.size, stored.checkpoint.root

    def proof(seq: int) -> list[bytes]:
        hashes = room.log.inclusion_proof(seq, size)
        try:  # never write a proof that does not verify: a stored node may have been altered
            verify_inclusion(room.log.leaf_hash(seq), seq - 1, size, hashes, root)
        except ProofError as error:
            raise CorruptStoreError(f"room {room.id}: the stored tree gives seq {seq} a proof that does not verify "
                                    f"against checkpoint {size} ({error})") from None
        return hashes

    items = record_items(room.events_since(0, size), proof)
    if not items:
        raise Conflict("nothing_to_report", f"room {room.id} has no annotations at checkpoint {size}")
    meshes = [catalog.mesh(mesh_id) for mesh_id in room.info.meshes]
    series = next((catalog.series(m["series_id"]) for m in meshes if m is not None), None)
    if series is None:
        raise NotFound("not_found", f"the source series of room {room.id} is no longer in the library")
    return RoomRecord(room.id, Record(stored.note, tuple(items)), stored.checkpoint, room.closed, series)


def consult_record(made: RoomRecord, catalog: Catalog, store: ArtifactStore) -> ConsultRecord:
    """The SR of a room's record, about its source series (whose headers are read from the store: run it in a
    thread). Raises NotFound if the library no longer holds the series' instances, CorruptStoreError if one no
    longer matches its content address."""
    from server.services.sr import write_record  # highdicom loads slowly: only when a record is made

    evidence = source_headers(made.series, catalog, store)
    dataset = write_record(made.record, made.checkpoint, made.room, evidence, complete=made.closed)
    return ConsultRecord(made.room, dataset, made.checkpoint.size, len(made.record.items))


def source_headers(series: dict, catalog: Catalog, store: ArtifactStore) -> list[Dataset]:
    """The headers (no pixels) of the instances of catalog series `series`. Raises NotFound if none is left."""
    headers = []
    for instance in catalog.instances_of(series["study_id"]):
        path = store.verified_path(instance["sha256"], ".dcm")
        header = pydicom.dcmread(path, stop_before_pixels=True)
        if header.get("SeriesInstanceUID") == series["uid"]:
            headers.append(header)
    if not headers or not headers[0].get("FrameOfReferenceUID"):
        raise NotFound("not_found", f"the library holds no instance of series {series['id']} with a frame of "
                                    "reference")
    return headers

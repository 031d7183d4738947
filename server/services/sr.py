"""The consult record as DICOM: a Comprehensive 3D SR (TID 1500 Measurement Report, written with highdicom), and
its reading back into plain values (sessions/report.py's `Record`) for `theatrum verify --report`.

One measurement group per annotation (docs/ledger.md section 8 shows the tree):

- a point, a measurement, a stroke or a positioned note is a TID 1410 group whose Image Region is an SCOORD3D in
  the source series' FrameOfReferenceUID (patient LPS mm): a POINT, the two ends of a POLYLINE with a Length NUM
  (SCT 410668003, UCUM mm), a POLYLINE of the stroke's points, or the note's POINT; a note without a position
  is a TID 1501 group;
- its Tracking Identifier is the annotation id (with a tracking UID derived from room and id), its label a
  Short Label TEXT (DCM 125309), a note's text a Comment TEXT (DCM 121106), its author's pseudonym the Person
  Observer Name (a PNAME in HAS OBS CONTEXT), and the time of the event that last changed it the group's
  ObservationDateTime (UTC, to the millisecond);
- and a TEXT "Ledger citation" (private code THTR1 of scheme 99THEATRUM):
  `room=<room> seq=<seq> leaf=<leaf hash hex> proof=<hex>,<hex>,...` (the inclusion proof, leaf upward).

The document's root carries the signed checkpoint note that covers the citations (TEXT, code THTR2). The patient
and study modules are the source study's (highdicom copies them from the evidence, the source series'
headers): this object goes back to the patient's record. Its series and instance UIDs are derived from the
room (one series per room) and the checkpoint size, its content date the checkpoint's time, so the same
checkpoint always gives the same document.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
from highdicom.sr import (
    CodedConcept,
    Comprehensive3DSR,
    DeviceObserverIdentifyingAttributes,
    GraphicTypeValues3D,
    ImageRegion3D,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    PersonObserverIdentifyingAttributes,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    RelationshipTypeValues,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage

from reconstruction import __version__
from sessions.ledger.note import Checkpoint
from sessions.ops import AnnotationType
from sessions.report import Citation, Record, ReportItem

SCHEME = "99THEATRUM"  # a private coding scheme (PS3.16 8.2: designators beginning "99")
CITATION = CodedConcept("THTR1", SCHEME, "Ledger citation")
CHECKPOINT = CodedConcept("THTR2", SCHEME, "Signed checkpoint")
SHORT_LABEL, COMMENT = codes.DCM.ShortLabel, codes.DCM.Comment
SERIES_NUMBER = 9100
SERIES_DESCRIPTION = "Theatrum consult record"
PROCEDURES = {"CT": codes.cid100.CTUnspecifiedBodyRegion, "MR": codes.cid100.MRIUnspecifiedBodyRegion,
              "PT": codes.cid100.PETUnspecifiedBodyRegion, "NM": codes.cid100.NMUnspecifiedBodyRegion}
_CITATION = re.compile(r"room=(?P<room>[A-Za-z0-9_.:-]{1,128}) seq=(?P<seq>[1-9][0-9]{0,15}) "
                       r"leaf=(?P<leaf>[0-9a-f]{64}) proof=(?P<proof>(?:[0-9a-f]{64}(?:,[0-9a-f]{64})*)?)")
_DATETIME = re.compile(r"(\d{14})\.(\d{3})000\+0000")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RecordFormatError(ValueError):
    """The object is not a consult record this server writes; the message names the item or element."""


def derived_uid(*parts: str) -> str:
    """A UID under the 2.25 root (a UUID-derived UID, PS3.5 B.2) from a hash of `parts`: the same parts always
    give the same UID."""
    digest = hashlib.sha256("\x00".join(("theatrum", *parts)).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


# ---- writing ---------------------------------------------------------------------------------------------

def write_record(record: Record, checkpoint: Checkpoint, room: str, evidence: Sequence[Dataset], *,
                 complete: bool) -> Comprehensive3DSR:
    """The SR of `record` (cut at `checkpoint`) about the source series whose headers are `evidence`.

    Requires at least one item, and evidence headers of one series with a FrameOfReferenceUID. `complete` says
    whether the room is closed (CompletionFlag COMPLETE) or may still change (PARTIAL).
    """
    frame = evidence[0].FrameOfReferenceUID
    groups = [_group(item, room, frame) for item in record.items]
    device = ObserverContext(observer_type=codes.DCM.Device,
                             observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
                                 uid=derived_uid("device"), name="Theatrum", manufacturer_name="Theatrum",
                                 model_name="Theatrum"))
    modality = str(evidence[0].get("Modality", ""))
    report = MeasurementReport(observation_context=ObservationContext(observer_device_context=device),
                               procedure_reported=PROCEDURES.get(modality, codes.cid100.ImagingProcedure),
                               imaging_measurements=groups)
    report[0].ContentSequence.append(_text(CHECKPOINT, record.checkpoint, RelationshipTypeValues.CONTAINS))
    with warnings.catch_warnings():  # highdicom's doubts about the source's own PatientName form
        warnings.simplefilter("ignore", UserWarning)
        sr = Comprehensive3DSR(
            evidence=evidence, content=report[0], series_instance_uid=derived_uid("record-series", room),
            series_number=SERIES_NUMBER, sop_instance_uid=derived_uid("record", room, str(checkpoint.size)),
            instance_number=checkpoint.size, manufacturer="Theatrum", is_complete=complete,
            series_description=SERIES_DESCRIPTION, software_versions=__version__)
    when = _datetime(checkpoint.time)  # the record's moment is its checkpoint's, not the download's
    for prefix in ("Content", "Series", "InstanceCreation"):
        setattr(sr, f"{prefix}Date", when[:8])
        setattr(sr, f"{prefix}Time", when[8:14])
    for equipment in sr.get("ContributingEquipmentSequence", []):
        if equipment.get("ManufacturerModelName") == "highdicom":  # the library that wrote it: stamped "now"
            equipment.ContributionDateTime = when
    sr.SpecificCharacterSet = "ISO_IR 192"  # labels and notes are Unicode
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "Theatrum ledger concepts"
    scheme.CodingSchemeResponsibleOrganization = "Theatrum"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def _group(item: ReportItem, room: str, frame: str):
    """One measurement group (TID 1410, or 1501 for a note without a position) with its extra items."""
    tracking = TrackingIdentifier(identifier=item.annotation, uid=derived_uid("annotation", room, item.annotation))
    if item.points:
        graphic = GraphicTypeValues3D.POINT if len(item.points) == 1 else GraphicTypeValues3D.POLYLINE
        region = ImageRegion3D(graphic_type=graphic, graphic_data=np.array(item.points, dtype=np.float64),
                               frame_of_reference_uid=frame)
        measurements = []
        if item.length_mm is not None:
            measurements = [Measurement(name=codes.SCT.Length, value=item.length_mm, unit=codes.UCUM.Millimeter)]
        template = PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, referenced_region=region, measurements=measurements)
    else:
        template = MeasurementsAndQualitativeEvaluations(tracking_identifier=tracking)
    group = template[0]
    group.ObservationDateTime = _datetime(item.at)
    content = group.ContentSequence
    if item.label:
        content.append(_text(SHORT_LABEL, item.label, RelationshipTypeValues.HAS_CONCEPT_MOD))
    if item.type is AnnotationType.NOTE:
        content.append(_text(COMMENT, item.text, RelationshipTypeValues.CONTAINS))
    # The author as the group's observer (TID 1002): a person, named by the pseudonym (one PN component).
    content.extend(ObserverContext(observer_type=codes.DCM.Person,
                                   observer_identifying_attributes=PersonObserverIdentifyingAttributes(
                                       name=f"{item.author}^")))
    cited = item.citation
    content.append(_text(CITATION, f"room={cited.room} seq={cited.seq} leaf={cited.leaf_hash} "
                                   f"proof={','.join(cited.proof)}", RelationshipTypeValues.CONTAINS))
    return template


def _text(name, value: str, relationship: RelationshipTypeValues) -> TextContentItem:
    return TextContentItem(name=name, value=value, relationship_type=relationship)


def _datetime(at: int) -> str:
    """ms since the epoch as a DICOM DT in UTC, to the millisecond: YYYYMMDDHHMMSS.fff000+0000."""
    seconds, ms = divmod(at, 1000)
    return f"{_EPOCH + timedelta(seconds=seconds):%Y%m%d%H%M%S}.{ms:03d}000+0000"


# ---- reading ---------------------------------------------------------------------------------------------

def read_record(ds: Dataset) -> Record:
    """The record an SR claims. Raises RecordFormatError naming the item or element that is not as written."""
    if str(ds.get("SOPClassUID", "")) != Comprehensive3DSRStorage:
        raise RecordFormatError("not a Comprehensive 3D SR (SOPClassUID "
                                f"{str(ds.get('SOPClassUID', 'missing'))!r})")
    checkpoints = [item for item in _content(ds) if _is(item, CHECKPOINT, "TEXT")]
    if len(checkpoints) != 1:
        raise RecordFormatError(f"the document carries {len(checkpoints)} signed checkpoints, not one")
    measurements = [item for item in _content(ds) if _is(item, codes.DCM.ImagingMeasurements, "CONTAINER")]
    if len(measurements) != 1:
        raise RecordFormatError("the document has no Imaging Measurements container")
    groups = _content(measurements[0])
    items = tuple(_item(group, number) for number, group in enumerate(groups, start=1))
    _check_frames(groups, items)
    return Record(_note(checkpoints[0]), items)


def _check_frames(groups: list[Dataset], items: Sequence[ReportItem]) -> None:
    """Every item's coordinates are in the one frame of reference most of them name (the source series')."""
    frames = [[str(region.get("ReferencedFrameOfReferenceUID", "")) for region in _content(group)
               if _is(region, codes.DCM.ImageRegion, "SCOORD3D")] for group in groups]
    named = [frame for found in frames for frame in found]
    if not named:
        return
    common = max(dict.fromkeys(named), key=named.count)
    for number, (found, item) in enumerate(zip(frames, items, strict=True), start=1):
        if any(frame != common or not frame for frame in found):
            raise RecordFormatError(f"item {number} ({item.annotation}): its coordinates are in frame of reference "
                                    f"{found[0]!r}, the others' in {common!r}")


def _note(item: Dataset) -> str:
    """The checkpoint note (a signed note ends with a newline; UT keeps it, but drops trailing spaces)."""
    text = str(item.get("TextValue", ""))
    return text if text.endswith("\n") else text + "\n"


def _item(group: Dataset, number: int) -> ReportItem:
    where = f"item {number}"
    if not _is(group, codes.DCM.MeasurementGroup, "CONTAINER"):
        raise RecordFormatError(f"{where} is not a measurement group")
    content = _content(group)
    annotation = _one_text(content, codes.DCM.TrackingIdentifier, where, required=True)
    where = f"item {number} ({annotation})"
    label = _one_text(content, SHORT_LABEL, where)
    comment = _one_text(content, COMMENT, where, required=False, default=None)
    authors = [c for c in content if _is(c, codes.DCM.PersonObserverName, "PNAME")]
    if len(authors) != 1 or not authors[0].get("PersonName"):
        raise RecordFormatError(f"{where}: it has {len(authors)} Person Observer Names, not one")
    author = str(authors[0].PersonName).removesuffix("^")
    at = _ms(str(group.get("ObservationDateTime", "")), where)
    citation = _citation(_one_text(content, CITATION, where, required=True), where)
    regions = [c for c in content if _is(c, codes.DCM.ImageRegion, "SCOORD3D")]
    lengths = [c for c in content if _is(c, codes.SCT.Length, "NUM")]
    if len(regions) > 1 or len(lengths) > 1:
        raise RecordFormatError(f"{where}: more than one image region or length")
    points, graphic = _points(regions[0], where) if regions else ((), None)
    length = _length(lengths[0], where) if lengths else None
    if comment is not None:
        kind = AnnotationType.NOTE
        if graphic not in (None, "POINT") or length is not None:
            raise RecordFormatError(f"{where}: a note has a {graphic or 'length'}")
    elif graphic == "POINT" and length is None:
        kind = AnnotationType.POINT
    elif graphic == "POLYLINE":
        kind = AnnotationType.MEASUREMENT if length is not None else AnnotationType.STROKE
    else:
        raise RecordFormatError(f"{where}: an image region of type {graphic} with{'out' if length is None else ''} "
                                "a length is no annotation this server writes")
    return ReportItem(annotation, kind, label or "", comment or "", author, at, points, length, citation)


def _content(item: Dataset) -> list[Dataset]:
    return list(item.get("ContentSequence", []))


def _is(item: Dataset, concept, value_type: str) -> bool:
    names = item.get("ConceptNameCodeSequence", [])
    if len(names) != 1 or item.get("ValueType") != value_type:
        return False
    name = names[0]
    return (name.get("CodeValue"), name.get("CodingSchemeDesignator")) == (concept.value, concept.scheme_designator)


def _one_text(content: list[Dataset], concept, where: str, *, required: bool = False, default: str | None = ""):
    found = [c for c in content if _is(c, concept, "TEXT")]
    if len(found) > 1 or (required and not found):
        want = "one" if required else "one or none"
        raise RecordFormatError(f"{where}: {len(found)} {concept.meaning} items, want {want}")
    return str(found[0].get("TextValue", "")) if found else default


def _citation(text: str, where: str) -> Citation:
    match = _CITATION.fullmatch(text)
    if match is None:
        raise RecordFormatError(f"{where}: its ledger citation {text[:120]!r} is malformed")
    proof = tuple(match["proof"].split(",")) if match["proof"] else ()
    return Citation(match["room"], int(match["seq"]), match["leaf"], proof)


def _ms(value: str, where: str) -> int:
    match = _DATETIME.fullmatch(value)
    if match is None:
        raise RecordFormatError(f"{where}: ObservationDateTime {value!r} is not a UTC time to the millisecond")
    try:
        when = datetime.strptime(match[1], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise RecordFormatError(f"{where}: ObservationDateTime {value!r} is no calendar time") from None
    return (when - _EPOCH) // timedelta(seconds=1) * 1000 + int(match[2])


def _points(region: Dataset, where: str) -> tuple[tuple[tuple[float, float, float], ...], str]:
    data = [float(v) for v in region.get("GraphicData", [])]
    graphic = str(region.get("GraphicType", ""))
    if not data or len(data) % 3 or not np.all(np.isfinite(data)):
        raise RecordFormatError(f"{where}: its GraphicData is not a list of 3D points")
    points = tuple((data[i], data[i + 1], data[i + 2]) for i in range(0, len(data), 3))
    if (graphic == "POINT") != (len(points) == 1) or graphic not in ("POINT", "POLYLINE"):
        raise RecordFormatError(f"{where}: a {graphic} of {len(points)} points")
    return points, graphic


def _length(num: Dataset, where: str) -> float:
    values = num.get("MeasuredValueSequence", [])
    if len(values) != 1:
        raise RecordFormatError(f"{where}: its length has no measured value")
    value = values[0]
    units = value.get("MeasurementUnitsCodeSequence", [])
    if len(units) != 1 or (units[0].get("CodeValue"), units[0].get("CodingSchemeDesignator")) != ("mm", "UCUM"):
        raise RecordFormatError(f"{where}: its length is not in mm (UCUM)")
    try:
        length = float(value.NumericValue)
    except (AttributeError, TypeError, ValueError):
        raise RecordFormatError(f"{where}: its length is not a number") from None
    if not np.isfinite(length):
        raise RecordFormatError(f"{where}: its length is not finite")
    return length


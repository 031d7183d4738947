"""One DICOM file's header -> an `Instance` (what grouping and decoding need), or a `Skipped` with a reason.

Headers are read with pydicom up to the pixel data, never the pixels themselves; the byte offset of the
pixel data value is kept so that decoding reads it directly. Files without a preamble or File Meta are read
with ``force=True``, and such a forced read is accepted only if it yields a plausible dataset (a SOP Class
UID, or Rows and Columns). Each frame is a `Frame` with its own geometry: enhanced multi-frame objects take
theirs from the functional groups, RT Dose grids from GridFrameOffsetVector.
"""

from __future__ import annotations

import contextlib
import functools
import struct
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from .errors import InputError
from .progress import Progress, no_progress
from .sources import MEDIA_STORAGE_DIRECTORY, Archives, FileRef, Skipped

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"

SEGMENTATION_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.4"}
"""Segmentation Storage: pixel data, but labels, not an image."""

READ_WORKERS = 4
"""Threads reading headers: pydicom parsing holds the GIL, so this mostly overlaps file I/O."""


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


HEADER_KEYWORDS = _words(
    """
    SOPClassUID SOPInstanceUID SeriesInstanceUID StudyInstanceUID StudyDescription Modality SeriesDescription
    SeriesNumber ImageType EchoNumbers Rows Columns SamplesPerPixel PhotometricInterpretation BitsAllocated
    BitsStored PixelRepresentation NumberOfFrames ImagePositionPatient ImageOrientationPatient PixelSpacing
    SliceThickness RescaleSlope RescaleIntercept RescaleType DoseGridScaling DoseUnits GridFrameOffsetVector
    PerFrameFunctionalGroupsSequence SharedFunctionalGroupsSequence DirectoryRecordSequence
    """
)
"""The only elements the header reader parses (pydicom skips the others' values)."""
_HEADER_TAGS = [Tag(keyword) for keyword in HEADER_KEYWORDS]

_PIXEL_DATA = 0x7FE00010
_FLOAT_PIXEL_DATA = {0x7FE00008: "Float Pixel Data", 0x7FE00009: "Double Float Pixel Data"}
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"UT", b"SQ", b"UC", b"UR"}


@dataclass(frozen=True)
class Frame:
    """One frame of an instance (a slice): its geometry in LPS mm and its rescale to output units.

    ``orientation`` holds the six direction cosines of ImageOrientationPatient; ``pixel_spacing`` is
    (Δrow, Δcol) as PixelSpacing. Geometry is None where the file does not give it.
    """

    index: int
    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None = None
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    frame_type: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Instance:
    """The header of one DICOM image file: identity, pixel format, and one `Frame` per frame.

    ``pixel_offset``/``pixel_length``: where the Pixel Data value starts in the file and its length (None for
    encapsulated data, which runs to the sequence delimiter). ``pixel_offset`` is None when the offset is not
    meaningful (a deflated dataset); decoding then re-reads the whole dataset.
    """

    ref: FileRef
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    study_description: str
    modality: str
    series_description: str
    series_number: int | None
    image_type: tuple[str, ...]
    echo_numbers: str
    rows: int
    columns: int
    samples_per_pixel: int
    photometric_interpretation: str
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    transfer_syntax_uid: str
    frames: tuple[Frame, ...]
    pixel_offset: int | None
    pixel_length: int | None
    units: str = ""

    @property
    def path(self) -> str:
        return str(self.ref)

    @property
    def number_of_frames(self) -> int:
        return len(self.frames)


class _BadValue(Exception):
    """A header element whose value cannot be converted (e.g. NumberOfFrames '1A')."""

    def __init__(self, keyword: str, value: object):
        super().__init__(f"invalid {keyword} value {str(value)[:40]!r}")


def read_instances(
    refs: Sequence[FileRef], progress: Progress | None = None
) -> tuple[list[Instance], list[Skipped]]:
    """Read every file's header in a thread pool, in order; report ("reading", i, n)."""
    progress = progress or no_progress
    instances: list[Instance] = []
    skipped: list[Skipped] = []
    total = len(refs)
    progress("reading", 0, total)
    with _quiet_pydicom(), Archives() as archives, ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
        for done, result in enumerate(pool.map(functools.partial(read_instance, archives=archives), refs), 1):
            (instances if isinstance(result, Instance) else skipped).append(result)
            progress("reading", done, total)
    return instances, skipped


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings about every odd value it tolerates (what matters ends up in Skipped).

    warnings.catch_warnings swaps process-wide state, so it is only used from the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def read_instance(ref: FileRef, archives: Archives | None = None) -> Instance | Skipped:
    """Read one file's header (zip members through ``archives`` if given). Never raises for a bad file: the
    problem becomes the Skipped reason."""
    try:
        with archives.open(ref) if archives is not None else ref.open() as fp:
            return _read(ref, fp)
    except _BadValue as e:
        return Skipped(str(ref), str(e))
    except InputError as e:
        return Skipped(str(ref), e.problem)
    except Exception as e:  # pydicom raises many exception types on malformed files
        return Skipped(str(ref), f"unreadable DICOM header ({type(e).__name__}: {str(e)[:160]})")


def _read(ref: FileRef, fp: BinaryIO) -> Instance | Skipped:
    head = fp.read(132)
    fp.seek(0)
    if head[:2] == b"\x1f\x8b":
        return Skipped(str(ref), "gzip-compressed file, not DICOM (gunzip it first)")
    if head[:4] == b"PK\x03\x04":
        return Skipped(str(ref), "zip archive inside a zip archive")  # files and folders are sniffed
    has_preamble = head[128:132] == b"DICM"
    ds = pydicom.dcmread(fp, stop_before_pixels=True, force=not has_preamble, specific_tags=_HEADER_TAGS)
    meta = getattr(ds, "file_meta", None) or Dataset()
    sop_class = _text(ds, "SOPClassUID") or _text(meta, "MediaStorageSOPClassUID")
    if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        return Skipped(str(ref), "directory record")
    if sop_class in SEGMENTATION_CLASSES:
        return Skipped(str(ref), "segmentation (SEG), not an image")
    if not sop_class and not ("Rows" in ds and "Columns" in ds):
        what = "DICOM file without SOP Class UID or image attributes" if has_preamble else "not a DICOM file"
        return Skipped(str(ref), what)
    transfer_syntax = _transfer_syntax(ds, meta)
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        fp.seek(0)
        full = pydicom.dcmread(fp, force=not has_preamble)
        location: tuple[int | None, int | None] | str | None = (None, None) if "PixelData" in full else None
    else:
        little = transfer_syntax != EXPLICIT_VR_BIG_ENDIAN
        location = _pixel_data_location(fp, little)
    if location is None:
        name = UID(sop_class).name if sop_class else ""
        return Skipped(str(ref), f"no pixel data ({name})" if name else "no pixel data")
    if isinstance(location, str):
        return Skipped(str(ref), f"{location} is not supported")
    for keyword in ("Rows", "Columns", "BitsAllocated"):
        if keyword not in ds:
            return Skipped(str(ref), f"pixel data without {keyword}")
    return _instance(ref, ds, sop_class, transfer_syntax, location)


def _transfer_syntax(ds: Dataset, meta: Dataset) -> str:
    """The File Meta transfer syntax, or the encoding pydicom found when the meta lacks one."""
    uid = _text(meta, "TransferSyntaxUID")
    if uid:
        return uid
    implicit, little = ds.original_encoding
    if implicit:
        return IMPLICIT_VR_LITTLE_ENDIAN
    return EXPLICIT_VR_LITTLE_ENDIAN if little else EXPLICIT_VR_BIG_ENDIAN


def _pixel_data_location(fp: BinaryIO, little: bool) -> tuple[int, int | None] | str | None:
    """Parse the element header where pydicom stopped: (value offset, length or None if undefined).

    None if there is no pixel data; the element's name if it is float pixel data.
    """
    start = fp.tell()
    raw = fp.read(12)
    if len(raw) < 8:
        return None
    endian = "<" if little else ">"
    group, element = struct.unpack(endian + "HH", raw[:4])
    tag = group << 16 | element
    if tag in _FLOAT_PIXEL_DATA:
        return _FLOAT_PIXEL_DATA[tag]
    if tag != _PIXEL_DATA:
        return None
    if raw[4:6] in _LONG_VRS and len(raw) == 12:
        header, length = 12, struct.unpack(endian + "I", raw[8:12])[0]
    else:
        header, length = 8, struct.unpack(endian + "I", raw[4:8])[0]
    if length == 0:
        return None
    return start + header, None if length == 0xFFFFFFFF else length


def _instance(
    ref: FileRef, ds: Dataset, sop_class: str, transfer_syntax: str, location: tuple[int | None, int | None]
) -> Instance:
    modality = _text(ds, "Modality").upper()
    number_of_frames = _int(ds, "NumberOfFrames", 1) or 1
    if number_of_frames < 1:
        raise _BadValue("NumberOfFrames", number_of_frames)
    image_type = _strings(ds, "ImageType")
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        frames = _functional_group_frames(ds, number_of_frames)
    elif number_of_frames > 1:
        frames = _multi_frame(ds, number_of_frames, image_type)
    else:
        frames = (_classic_frame(ds, 0, image_type),)
    if modality == "RTDOSE":
        scaling = _float(ds, "DoseGridScaling", 1.0)
        frames = tuple(replace(f, rescale_slope=scaling, rescale_intercept=0.0) for f in frames)
    return Instance(
        ref=ref,
        sop_class_uid=sop_class,
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        study_description=_text(ds, "StudyDescription"),
        modality=modality,
        series_description=_text(ds, "SeriesDescription"),
        series_number=_int(ds, "SeriesNumber", None),
        image_type=image_type,
        echo_numbers=_text(ds, "EchoNumbers"),
        rows=_int(ds, "Rows", 0) or 0,
        columns=_int(ds, "Columns", 0) or 0,
        samples_per_pixel=_int(ds, "SamplesPerPixel", 1) or 1,
        photometric_interpretation=_text(ds, "PhotometricInterpretation").upper(),
        bits_allocated=_int(ds, "BitsAllocated", 0) or 0,
        bits_stored=_int(ds, "BitsStored", None) or _int(ds, "BitsAllocated", 0) or 0,
        pixel_representation=_int(ds, "PixelRepresentation", 0) or 0,
        transfer_syntax_uid=transfer_syntax,
        frames=frames,
        pixel_offset=location[0],
        pixel_length=location[1],
        units=_units(ds, modality),
    )


def _units(ds: Dataset, modality: str) -> str:
    if modality == "CT":
        return "HU"
    if modality == "RTDOSE":
        return _text(ds, "DoseUnits").upper() or "GY"
    rescale_type = _text(ds, "RescaleType").upper()
    return "" if rescale_type in ("", "US") else rescale_type


def _classic_frame(ds: Dataset, index: int, frame_type: tuple[str, ...]) -> Frame:
    return Frame(
        index=index,
        position=_vector(ds, "ImagePositionPatient", 3),  # type: ignore[arg-type]
        orientation=_vector(ds, "ImageOrientationPatient", 6),  # type: ignore[arg-type]
        pixel_spacing=_vector(ds, "PixelSpacing", 2),  # type: ignore[arg-type]
        slice_thickness=_positive(_float(ds, "SliceThickness", None)),
        rescale_slope=_float(ds, "RescaleSlope", 1.0) or 1.0,
        rescale_intercept=_float(ds, "RescaleIntercept", 0.0) or 0.0,
        frame_type=frame_type,
    )


def _multi_frame(ds: Dataset, count: int, image_type: tuple[str, ...]) -> tuple[Frame, ...]:
    """Classic multi-frame: a dose grid positions its frames by GridFrameOffsetVector; others have no
    per-frame positions (their frames keep position None)."""
    first = _classic_frame(ds, 0, image_type)
    offsets = _vector(ds, "GridFrameOffsetVector", count)
    if offsets is None or first.position is None or first.orientation is None:
        return tuple(replace(first, index=i, position=None) for i in range(count))
    normal = _normal(first.orientation)
    origin = np.asarray(first.position, dtype=np.float64)
    # Relative offsets start at 0; absolute ones (axial only) start at IPP z. Both are distances along the
    # normal from the first frame once the first offset is subtracted.
    frames = []
    for i, g in enumerate(offsets):
        p = origin + (g - offsets[0]) * normal
        frames.append(replace(first, index=i, position=(float(p[0]), float(p[1]), float(p[2]))))
    return tuple(frames)


def _functional_group_frames(ds: Dataset, count: int) -> tuple[Frame, ...]:
    """Enhanced multi-frame: each frame's geometry from its Per-Frame item, else from the Shared item."""
    shared_seq = ds.get("SharedFunctionalGroupsSequence") or []
    shared = shared_seq[0] if len(shared_seq) else Dataset()
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if per_frame and len(per_frame) != count:
        raise _BadValue(
            "PerFrameFunctionalGroupsSequence length", f"{len(per_frame)} items for {count} frames"
        )
    top_slope = _float(ds, "RescaleSlope", 1.0) or 1.0
    top_intercept = _float(ds, "RescaleIntercept", 0.0) or 0.0
    frames = []
    for i in range(count):
        groups = (per_frame[i], shared) if per_frame else (shared,)
        measures = _macro(groups, "PixelMeasuresSequence")
        transform = _macro(groups, "PixelValueTransformationSequence")
        position = _macro(groups, "PlanePositionSequence")
        orientation = _macro(groups, "PlaneOrientationSequence")
        slope = _float(transform, "RescaleSlope", None) if transform is not None else None
        intercept = _float(transform, "RescaleIntercept", None) if transform is not None else None
        frames.append(
            Frame(
                index=i,
                position=_vector(position, "ImagePositionPatient", 3) if position is not None else None,  # type: ignore[arg-type]
                orientation=_vector(orientation, "ImageOrientationPatient", 6)
                if orientation is not None
                else None,  # type: ignore[arg-type]
                pixel_spacing=_vector(measures, "PixelSpacing", 2) if measures is not None else None,  # type: ignore[arg-type]
                slice_thickness=_positive(_float(measures, "SliceThickness", None))
                if measures is not None
                else None,
                rescale_slope=top_slope if slope is None else slope,
                rescale_intercept=top_intercept if intercept is None else intercept,
                frame_type=_frame_type(groups) or _strings(ds, "ImageType"),
            )
        )
    return tuple(frames)


def _macro(groups: Sequence[Dataset], keyword: str) -> Dataset | None:
    """The first item of functional group macro ``keyword``, per-frame before shared."""
    for group in groups:
        seq = group.get(keyword)
        if seq is not None and len(seq):
            return seq[0]
    return None


def _frame_type(groups: Sequence[Dataset]) -> tuple[str, ...]:
    """FrameType from whichever <modality> Image Frame Type Sequence the groups hold."""
    for group in groups:
        for element in group:
            if element.VR == "SQ" and element.value and "FrameType" in element.value[0]:
                return _strings(element.value[0], "FrameType")
    return ()


def _normal(orientation: Sequence[float]) -> np.ndarray:
    n = np.cross(np.asarray(orientation[:3], dtype=np.float64), np.asarray(orientation[3:], dtype=np.float64))
    norm = np.linalg.norm(n)
    if norm < 1e-6:
        raise _BadValue("ImageOrientationPatient", list(orientation))
    return n / norm


def _raw(ds: Dataset, keyword: str) -> Any:
    """The value of ``keyword``. Plain ASCII strings and US values are taken from the raw bytes (pydicom's
    conversion costs more than the parse itself); everything else goes through pydicom."""
    try:
        element = ds.get_item(_tag(keyword))
        if element is None:
            return None
        if isinstance(element, RawDataElement) and keyword in _FAST_KEYWORDS and element.value is not None:
            value = _fast_value(keyword, element)
            if value is not _SLOW:
                return value
        return ds[keyword].value
    except _BadValue:
        raise
    except Exception as e:  # a value pydicom cannot convert at all
        raise _BadValue(keyword, e) from e


@functools.cache
def _tag(keyword: str) -> BaseTag:
    return Tag(keyword)


_SLOW = object()
_US_KEYWORDS = {"Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation"}
_TEXT_KEYWORDS = _words(
    """
    SOPClassUID SOPInstanceUID SeriesInstanceUID StudyInstanceUID Modality ImageType EchoNumbers SeriesNumber
    NumberOfFrames ImagePositionPatient ImageOrientationPatient PixelSpacing SliceThickness RescaleSlope
    RescaleIntercept RescaleType DoseGridScaling DoseUnits GridFrameOffsetVector PhotometricInterpretation
    FrameType MediaStorageSOPClassUID TransferSyntaxUID
    """
)
_FAST_KEYWORDS = frozenset(_US_KEYWORDS).union(_TEXT_KEYWORDS)


def _fast_value(keyword: str, element: RawDataElement) -> Any:
    raw: bytes = element.value
    if keyword in _US_KEYWORDS:
        if len(raw) != 2:
            return _SLOW
        return int.from_bytes(raw, "little" if element.is_little_endian else "big")
    if element.VR not in (None, "UN", "CS", "UI", "DS", "IS", "LO", "SH"):
        return _SLOW
    try:
        text = raw.decode("ascii").strip("\x00 ")
    except UnicodeDecodeError:
        return _SLOW
    if not text:
        return None
    parts = [p.strip() for p in text.split("\\")]
    return parts[0] if len(parts) == 1 else parts


def _text(ds: Dataset, keyword: str) -> str:
    value = _raw(ds, keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def _strings(ds: Dataset, keyword: str) -> tuple[str, ...]:
    value = _raw(ds, keyword)
    if value is None or value == "":
        return ()
    items = [value] if isinstance(value, str) else list(value)
    return tuple(str(v).strip().upper() for v in items)


def _int(ds: Dataset, keyword: str, default: int | None) -> int | None:
    value = _raw(ds, keyword)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as e:
        raise _BadValue(keyword, value) from e


def _float(ds: Dataset, keyword: str, default: float | None) -> float | None:
    value = _raw(ds, keyword)
    if value is None or value == "":
        return default
    try:
        result = float(value)
    except (TypeError, ValueError) as e:
        raise _BadValue(keyword, value) from e
    if not np.isfinite(result):
        raise _BadValue(keyword, value)
    return result


def _vector(ds: Dataset, keyword: str, size: int) -> tuple[float, ...] | None:
    """A multi-valued DS of exactly ``size`` finite numbers, or None if absent or empty."""
    value = _raw(ds, keyword)
    if value is None or value == "":
        return None
    items = [value] if isinstance(value, (str, int, float)) else list(value)
    try:
        numbers = tuple(float(v) for v in items)
    except (TypeError, ValueError) as e:
        raise _BadValue(keyword, value) from e
    if len(numbers) != size or not all(np.isfinite(numbers)):
        raise _BadValue(keyword, value)
    return numbers


def _positive(value: float | None) -> float | None:
    return value if value is not None and value > 0 else None

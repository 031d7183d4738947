"""One DICOM file's header -> an `Instance` (what grouping and decoding need), or a `Skipped` with a reason.

Headers are read with pydicom up to the pixel data, never the pixels themselves; the byte offset of the
pixel data value is kept so that decoding reads it directly. Files without a preamble or File Meta are read
with ``force=True``, and such a forced read is accepted only if it yields a plausible dataset (a SOP Class
UID, or Rows and Columns). Each frame is a `Frame` with its own geometry (``frames``); element values are
read by ``header_values``.
"""

from __future__ import annotations

import contextlib
import functools
import struct
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
    SegmentationStorage,
)

from .deflate import DEFAULT_MAX_INFLATED_BYTES, file_meta_syntax, inflated_dataset
from .descriptors import clean_descriptor, identifiers_of
from .errors import DecompressionBombError, InputError
from .frames import Frame, read_frames
from .header_values import BadValue, integer, keywords, strings, text
from .progress import Progress, no_progress
from .sources import Archives, FileRef, Skipped

READ_WORKERS = 4
"""Threads reading headers: pydicom parsing holds the GIL, so this mostly overlaps file I/O."""

HEADER_KEYWORDS = keywords(
    """
    SOPClassUID SOPInstanceUID SeriesInstanceUID StudyInstanceUID StudyDescription Modality SeriesDescription
    SeriesNumber ImageType EchoNumbers Rows Columns SamplesPerPixel PhotometricInterpretation BitsAllocated
    BitsStored PixelRepresentation NumberOfFrames ImagePositionPatient ImageOrientationPatient PixelSpacing
    SliceThickness RescaleSlope RescaleIntercept RescaleType DoseGridScaling DoseUnits GridFrameOffsetVector
    PerFrameFunctionalGroupsSequence SharedFunctionalGroupsSequence DirectoryRecordSequence FrameOfReferenceUID
    PatientName PatientID PatientBirthDate AccessionNumber
    """
)
"""The only elements the header reader parses (pydicom skips the others' values)."""
_HEADER_TAGS = [Tag(keyword) for keyword in HEADER_KEYWORDS]

_PIXEL_DATA = 0x7FE00010
_FLOAT_PIXEL_DATA = {0x7FE00008: "Float Pixel Data", 0x7FE00009: "Double Float Pixel Data"}
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"UT", b"SQ", b"UC", b"UR"}


@dataclass(frozen=True, eq=False)
class Instance:
    """The header of one DICOM image file: identity, pixel format, and one `Frame` per frame.

    ``pixel_offset``/``pixel_length``: where the Pixel Data value starts and its length (None for encapsulated
    data, which runs to the sequence delimiter). The offset counts in the file, or for a deflated dataset in
    the inflated dataset after the File Meta. The two descriptions are clean (reconstruction/descriptors.py):
    nothing of the patient's name, ids or birth date is left in them.
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
    frame_of_reference_uid: str = ""

    @property
    def path(self) -> str:
        return str(self.ref)

    @property
    def number_of_frames(self) -> int:
        return len(self.frames)


def read_instances(
    refs: Sequence[FileRef],
    progress: Progress | None = None,
    *,
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
) -> tuple[list[Instance], list[Skipped]]:
    """Read every file's header in a thread pool, in order; report ("reading", i, n).

    Raises DecompressionBombError (and reads no further file) for a deflated dataset that inflates past
    ``max_inflated_bytes`` or its ratio limit (see ``deflate``); every other bad file becomes a Skipped.
    """
    progress = progress or no_progress
    instances: list[Instance] = []
    skipped: list[Skipped] = []
    total = len(refs)
    progress("reading", 0, total)
    read = functools.partial(read_instance, max_inflated_bytes=max_inflated_bytes)
    with _quiet_pydicom(), Archives() as archives, ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
        # When a result raises, map's iterator cancels the reads that have not started.
        for done, result in enumerate(pool.map(functools.partial(read, archives=archives), refs), 1):
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


def read_instance(
    ref: FileRef, archives: Archives | None = None, *, max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES
) -> Instance | Skipped:
    """Read one file's header (zip members through ``archives`` if given). Raises DecompressionBombError for
    a deflated dataset past its limits; for any other bad file the problem becomes the Skipped reason."""
    try:
        with archives.open(ref) if archives is not None else ref.open() as fp:
            return _read(ref, fp, max_inflated_bytes)
    except BadValue as e:
        return Skipped(str(ref), str(e))
    except DecompressionBombError:
        raise
    except InputError as e:
        return Skipped(str(ref), e.problem)
    except Exception as e:  # pydicom raises many exception types on malformed files
        return Skipped(str(ref), f"unreadable DICOM header ({type(e).__name__}: {str(e)[:160]})")


def _read(ref: FileRef, fp: BinaryIO, max_inflated_bytes: int) -> Instance | Skipped:
    head = fp.read(132)
    fp.seek(0)
    if head[:2] == b"\x1f\x8b":
        return Skipped(str(ref), "gzip-compressed file, not DICOM (gunzip it first)")
    if head[:4] == b"PK\x03\x04":
        return Skipped(str(ref), "zip archive inside a zip archive")  # files and folders are sniffed
    has_preamble = head[128:132] == b"DICM"
    if file_meta_syntax(fp)[0] == DeflatedExplicitVRLittleEndian:
        ds, meta, location = _read_deflated(ref, fp, has_preamble, max_inflated_bytes)
        transfer_syntax: str = DeflatedExplicitVRLittleEndian
    else:
        fp.seek(0)
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=not has_preamble, specific_tags=_HEADER_TAGS)
        meta = getattr(ds, "file_meta", None) or Dataset()
        transfer_syntax = _transfer_syntax(ds, meta)
        location = _pixel_data_location(fp, little=transfer_syntax != ExplicitVRBigEndian)
    sop_class = text(ds, "SOPClassUID") or text(meta, "MediaStorageSOPClassUID")
    if sop_class == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds:
        return Skipped(str(ref), "directory record")
    if sop_class == SegmentationStorage:
        return Skipped(str(ref), "segmentation (SEG), not an image")
    if not sop_class and not ("Rows" in ds and "Columns" in ds):
        what = "DICOM file without SOP Class UID or image attributes" if has_preamble else "not a DICOM file"
        return Skipped(str(ref), what)
    if location is None:
        name = UID(sop_class).name if sop_class else ""
        return Skipped(str(ref), f"no pixel data ({name})" if name else "no pixel data")
    if isinstance(location, str):
        return Skipped(str(ref), f"{location} is not supported")
    for keyword in ("Rows", "Columns", "BitsAllocated"):
        if keyword not in ds:
            return Skipped(str(ref), f"pixel data without {keyword}")
    return _instance(ref, ds, sop_class, transfer_syntax, location)


def _read_deflated(
    ref: FileRef, fp: BinaryIO, has_preamble: bool, max_inflated_bytes: int
) -> tuple[Dataset, Dataset, tuple[int, int | None] | str | None]:
    """The header, File Meta and pixel data location (in the inflated dataset) of a deflated file, inflating
    no further than the pixel data element's header."""
    fp.seek(132 if has_preamble else 0)
    meta = read_dataset(fp, is_implicit_VR=False, is_little_endian=True, stop_when=_after_file_meta)
    reader = inflated_dataset(fp, source=str(ref), max_bytes=max_inflated_bytes, header=True)
    ds = read_dataset(
        reader, is_implicit_VR=False, is_little_endian=True, stop_when=_at_pixel_data, specific_tags=_HEADER_TAGS
    )
    return ds, meta, _pixel_data_location(reader, little=True)


def _after_file_meta(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag.group != 0x0002


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag == _PIXEL_DATA or tag in _FLOAT_PIXEL_DATA


def _transfer_syntax(ds: Dataset, meta: Dataset) -> str:
    """The File Meta transfer syntax, or the encoding pydicom found when the meta lacks one."""
    uid = text(meta, "TransferSyntaxUID")
    if uid:
        return uid
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


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
    modality = text(ds, "Modality").upper()
    frames = read_frames(ds, modality)
    patient = identifiers_of(ds)
    return Instance(
        ref=ref,
        sop_class_uid=sop_class,
        sop_instance_uid=text(ds, "SOPInstanceUID"),
        series_instance_uid=text(ds, "SeriesInstanceUID"),
        study_instance_uid=text(ds, "StudyInstanceUID"),
        frame_of_reference_uid=text(ds, "FrameOfReferenceUID"),
        study_description=clean_descriptor(text(ds, "StudyDescription"), patient),
        modality=modality,
        series_description=clean_descriptor(text(ds, "SeriesDescription"), patient),
        series_number=integer(ds, "SeriesNumber", None),
        image_type=strings(ds, "ImageType"),
        echo_numbers=text(ds, "EchoNumbers"),
        rows=integer(ds, "Rows", 0) or 0,
        columns=integer(ds, "Columns", 0) or 0,
        samples_per_pixel=integer(ds, "SamplesPerPixel", 1) or 1,
        photometric_interpretation=text(ds, "PhotometricInterpretation").upper(),
        bits_allocated=integer(ds, "BitsAllocated", 0) or 0,
        bits_stored=integer(ds, "BitsStored", None) or integer(ds, "BitsAllocated", 0) or 0,
        pixel_representation=integer(ds, "PixelRepresentation", 0) or 0,
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
        return text(ds, "DoseUnits").upper() or "GY"
    rescale_type = text(ds, "RescaleType").upper()
    return "" if rescale_type in ("", "US") else rescale_type

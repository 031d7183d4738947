"""Header element values, read fast and checked: the typed getters the header reader uses.

pydicom parses a header's elements lazily, as `RawDataElement` bytes, and converts a value when it is asked for.
That conversion costs more than the parse itself, so plain ASCII strings and US values are taken from the raw
bytes here; everything else goes through pydicom. A value that cannot be converted raises `BadValue`, which
names the element, so that the file can be skipped with that reason.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag


class BadValue(Exception):
    """A header element whose value cannot be converted (e.g. NumberOfFrames '1A')."""

    def __init__(self, keyword: str, value: object):
        super().__init__(f"invalid {keyword} value {str(value)[:40]!r}")


def keywords(spaced: str) -> tuple[str, ...]:
    """The keywords of a whitespace-separated list (long keyword lists read best as text)."""
    return tuple(spaced.split())


def text(ds: Dataset, keyword: str) -> str:
    """The value as one stripped string (multiple values joined by backslashes); "" when absent."""
    value = raw_value(ds, keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def strings(ds: Dataset, keyword: str) -> tuple[str, ...]:
    """Every value, stripped and upper case (as ImageType is compared); () when absent."""
    value = raw_value(ds, keyword)
    if value is None or value == "":
        return ()
    items = [value] if isinstance(value, str) else list(value)
    return tuple(str(v).strip().upper() for v in items)


def integer(ds: Dataset, keyword: str, default: int | None) -> int | None:
    value = raw_value(ds, keyword)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as e:
        raise BadValue(keyword, value) from e


def number(ds: Dataset, keyword: str, default: float | None) -> float | None:
    """A finite float."""
    value = raw_value(ds, keyword)
    if value is None or value == "":
        return default
    try:
        result = float(value)
    except (TypeError, ValueError) as e:
        raise BadValue(keyword, value) from e
    if not np.isfinite(result):
        raise BadValue(keyword, value)
    return result


def vector(ds: Dataset, keyword: str, size: int) -> tuple[float, ...] | None:
    """A multi-valued DS of exactly ``size`` finite numbers, or None if absent or empty."""
    value = raw_value(ds, keyword)
    if value is None or value == "":
        return None
    items = [value] if isinstance(value, (str, int, float)) else list(value)
    try:
        numbers = tuple(float(v) for v in items)
    except (TypeError, ValueError) as e:
        raise BadValue(keyword, value) from e
    if len(numbers) != size or not all(np.isfinite(numbers)):
        raise BadValue(keyword, value)
    return numbers


def positive(value: float | None) -> float | None:
    """``value`` if it is a positive number, else None (a SliceThickness of 0 means "not given")."""
    return value if value is not None and value > 0 else None


def raw_value(ds: Dataset, keyword: str) -> Any:
    """The value of ``keyword``, from the raw bytes where that is exact, else converted by pydicom."""
    try:
        element = ds.get_item(_tag(keyword))
        if element is None:
            return None
        if isinstance(element, RawDataElement) and keyword in _FAST_KEYWORDS and element.value is not None:
            value = _fast_value(keyword, element)
            if value is not _SLOW:
                return value
        return ds[keyword].value
    except BadValue:
        raise
    except Exception as e:  # a value pydicom cannot convert at all
        raise BadValue(keyword, e) from e


@functools.cache
def _tag(keyword: str) -> BaseTag:
    return Tag(keyword)


_SLOW = object()
_US_KEYWORDS = {"Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation"}
_TEXT_KEYWORDS = keywords(
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
        decoded = raw.decode("ascii").strip("\x00 ")
    except UnicodeDecodeError:
        return _SLOW
    if not decoded:
        return None
    parts = [p.strip() for p in decoded.split("\\")]
    return parts[0] if len(parts) == 1 else parts

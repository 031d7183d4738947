"""DICOM files built to attack a reader: deflated bombs, and headers that declare more than they hold.

Shared by the reconstruction tests (tests/reconstruction/test_hostile_inputs.py) and the server's upload tests.
"""

from __future__ import annotations

import tempfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
from conftest import write_ct_series
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, JPEGBaseline8Bit

MiB = 1 << 20
SERIES_UID = "1.2.826.0.1.3680043.8.498.77"


def ct_slice(z: float, rows: int, columns: int, transfer_syntax: str = ExplicitVRLittleEndian) -> Dataset:
    """The header of one axial CT slice of series SERIES_UID (as conftest writes them: 12 bits stored, intercept
    -1024) declaring ``rows`` x ``columns``, without pixel data."""
    with tempfile.TemporaryDirectory() as folder:
        (path,) = write_ct_series(Path(folder), [(0.0, 0.0, z)], series_uid=SERIES_UID)
        ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.Rows, ds.Columns = rows, columns
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    return ds


def slice_pixels(z: float) -> np.ndarray:
    """8x8 stored values of the slice at ``z`` (within 12 bits)."""
    return np.arange(64, dtype=np.uint16).reshape(8, 8) + 100 * int(z) + 1000


def encoded(ds: Dataset) -> bytes:
    """``ds`` in explicit VR little endian, without File Meta."""
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ds)
    return out.getvalue()


def write_deflated(
    path: Path,
    z: float,
    filler: bytes,
    repeats: int,
    undefined_length: bool = False,
    *,
    frames: int = 1,
    elements: bytes = b"",
) -> Path:
    """A deflated 8x8 CT slice whose private OB element (0029,1000) holds ``filler`` ``repeats`` times (of
    undefined length, ended by a Sequence Delimitation Item, if ``undefined_length``); with NumberOfFrames
    ``frames`` when more than one, and the encoded ``elements`` (groups 0029 to 7FDF) before its pixel data.

    Written as it is compressed, so that a bomb of gigabytes costs the test one block: after a full flush the
    compressor starts afresh, so the same block of input compresses to the same bytes every time.
    """
    ds = ct_slice(z, 8, 8, DeflatedExplicitVRLittleEndian)
    if frames > 1:
        ds.NumberOfFrames = frames
    header = encoded(ds)
    pixels = slice_pixels(z).astype("<u2").tobytes()
    private = b"\x29\x00\x10\x00LO" + (14).to_bytes(2, "little") + b"THEATRUM BOMB "
    length = 0xFFFFFFFF if undefined_length else len(filler) * repeats
    private += b"\x29\x00\x00\x10OB\x00\x00" + length.to_bytes(4, "little")
    pixel_element = b"\xe0\x7f\x10\x00OW\x00\x00" + len(pixels).to_bytes(4, "little") + pixels
    if undefined_length:
        pixel_element = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00" + pixel_element
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(path, "wb") as f:
        f.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(f, ds.file_meta, enforce_standard=True)
        f.write(deflate.compress(header + private) + deflate.flush(zlib.Z_FULL_FLUSH))
        block = deflate.compress(filler) + deflate.flush(zlib.Z_FULL_FLUSH)
        f.write(block)
        if repeats > 1:
            again = deflate.compress(filler) + deflate.flush(zlib.Z_FULL_FLUSH)
            assert again == block, "zlib no longer repeats a fully flushed block"
            f.write(block * (repeats - 2) if repeats > 2 else b"")
            f.write(again)
        f.write(deflate.compress(elements + pixel_element) + deflate.flush())
    return path


def write_native_series(folder: Path, rows: int, columns: int, pixel_data: bytes, slices: int = 3) -> Path:
    """``slices`` explicit VR little endian slices that declare rows x columns but hold ``pixel_data``."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(slices):
        ds = ct_slice(float(k), rows, columns)
        ds.PixelData = pixel_data
        ds["PixelData"].VR = "OW"
        ds.save_as(folder / f"IM{k}.dcm", enforce_file_format=True)
    return folder


def write_jpeg_series(folder: Path, rows: int, columns: int, slices: int = 3) -> Path:
    """``slices`` JPEG Baseline slices that declare rows x columns around a stream of a few bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(slices):
        ds = ct_slice(float(k), rows, columns, JPEGBaseline8Bit)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xd9"])
        ds["PixelData"].VR = "OB"
        ds.save_as(folder / f"IM{k}.dcm", enforce_file_format=True)
    return folder

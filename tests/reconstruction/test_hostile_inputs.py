"""Hostile DICOM files: decompression bombs in deflated datasets, and headers that declare more than they hold.

Each attack file is built here, in a temporary folder. Memory is measured in a fresh process that reads the
file: its peak resident size (VmHWM) after the read against its resident size before (after the imports). Not
ru_maxrss: Linux carries that over an exec from the forked copy of the parent, here the whole test session.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import write_ct_series
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, JPEGBaseline8Bit

from reconstruction.assembly import assemble_volume
from reconstruction.errors import DecompressionBombError, InputError, PixelDataError, VolumeTooLargeError
from reconstruction.series import find_series, pick_series

MiB = 1 << 20
MEMORY_LIMIT_MB = 200
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


READ_AND_ASSEMBLE = """
import json, sys
from reconstruction.assembly import assemble_volume
from reconstruction.errors import ReconstructionError
from reconstruction.series import find_series, pick_series

def kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))

idle = kib("VmRSS")
try:
    assemble_volume(pick_series(find_series(sys.argv[1:])))
    outcome = "read"
except ReconstructionError as e:
    outcome = f"{type(e).__name__}: {e}"
print(json.dumps({"outcome": outcome, "above_idle_mb": (kib("VmHWM") - idle) / 1024}))
"""


def read_in_a_fresh_process(*inputs: Path) -> dict:
    """What reading and assembling ``inputs`` ends in, and the peak memory it took above the idle process."""
    done = subprocess.run(
        [sys.executable, "-c", READ_AND_ASSEMBLE, *map(str, inputs)],
        capture_output=True, text=True, timeout=300, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- decompression bombs in Deflated Explicit VR Little Endian -------------------------------------------------
@pytest.mark.parametrize(
    ("inflated_mib", "undefined_length"),
    [(512, False), (4080, False), (4096, True)],
    ids=["512MiB", "4GiB", "4GiB-undefined-length"],
)
def test_a_deflated_bomb_is_refused_naming_the_file_without_inflating_it(
    tmp_path: Path, inflated_mib: int, undefined_length: bool
):
    bomb = write_deflated(tmp_path / "bomb.dcm", 0.0, bytes(16 * MiB), inflated_mib // 16, undefined_length)
    assert bomb.stat().st_size < 5 * MiB
    with pytest.raises(DecompressionBombError) as error:
        find_series([tmp_path])
    assert isinstance(error.value, InputError)
    assert error.value.source == str(bomb) and "decompression bomb" in error.value.problem
    result = read_in_a_fresh_process(tmp_path)
    assert result["outcome"].startswith(f"DecompressionBombError: {bomb}: ")
    assert result["above_idle_mb"] < MEMORY_LIMIT_MB


def test_a_deflated_header_of_countless_small_items_is_refused_before_pydicom_keeps_them(tmp_path: Path):
    # 14 KB that inflate to 4.8 MB of per-frame functional groups, which pydicom would make 270 MB of objects of.
    position = Dataset()
    position.ImagePositionPatient = [0, 0, 1]
    group = Dataset()
    group.PlanePositionSequence = [position]
    item = encoded(group)
    items = (b"\xfe\xff\x00\xe0" + len(item).to_bytes(4, "little") + item) * 100_000
    sequence = b"\x00\x52\x30\x92SQ\x00\x00" + len(items).to_bytes(4, "little") + items  # (5200,9230)
    bomb = write_deflated(tmp_path / "groups.dcm", 0.0, b"", 0, frames=100_000, elements=sequence)
    assert bomb.stat().st_size < 64 * 1024
    result = read_in_a_fresh_process(tmp_path)
    assert result["outcome"].startswith(f"DecompressionBombError: {bomb}: the deflated header inflates more than")
    assert result["above_idle_mb"] < MEMORY_LIMIT_MB


def test_a_deflated_dataset_past_the_callers_limit_is_refused(tmp_path: Path):
    # Random bytes barely deflate, so only the caller's limit (e.g. from its upload limit) stops this one.
    noise = np.random.default_rng(7).integers(0, 256, MiB, dtype=np.uint8).tobytes()
    big = write_deflated(tmp_path / "big.dcm", 0.0, noise, 6)
    with pytest.raises(DecompressionBombError, match="past the limit of 4194304 bytes") as error:
        find_series([tmp_path], max_inflated_bytes=4 * MiB)
    assert error.value.source == str(big)
    assert len(find_series([tmp_path], max_inflated_bytes=8 * MiB).skipped) == 1  # a single slice, not a bomb


def test_a_deflated_dicomdir_is_refused_before_it_is_inflated(tmp_path: Path):
    dicomdir = write_deflated(tmp_path / "DICOMDIR", 0.0, bytes(16 * MiB), 255)
    with pytest.raises(InputError, match="a DICOMDIR must be Explicit VR Little Endian") as error:
        find_series([dicomdir])
    assert error.value.source == str(dicomdir)


def test_one_bomb_stops_the_whole_read(tmp_path: Path):
    for k in range(6):
        write_deflated(tmp_path / f"bomb{k}.dcm", float(k), bytes(16 * MiB), 64)
    with pytest.raises(DecompressionBombError):
        find_series([tmp_path])


def test_a_deflated_series_with_a_large_private_element_still_reads_and_decodes(tmp_path: Path):
    for k in range(3):
        write_deflated(tmp_path / f"IM{k}.dcm", float(k), bytes(MiB), 32)  # 32 MiB each, under the floor
    series = pick_series(find_series([tmp_path]))
    volume = assemble_volume(series)
    expected = np.stack([slice_pixels(k).astype(np.int16) - 1024 for k in range(3)])
    np.testing.assert_array_equal(volume.voxels, expected)


# -- headers that declare more than the file holds ---------------------------------------------------------------
def test_a_header_declaring_65535_squared_with_128_bytes_of_pixels_names_the_file(tmp_path: Path):
    folder = write_native_series(tmp_path / "s", 65535, 65535, bytes(128))
    series = pick_series(find_series([folder]))
    with pytest.raises(PixelDataError) as error:
        assemble_volume(series)
    assert Path(error.value.source).parent == folder
    assert "more than the limit" in error.value.problem
    with pytest.raises(PixelDataError, match=r"pixel data truncated: 128 of 8589672450 bytes"):
        assemble_volume(series, max_voxels=1 << 33)
    result = read_in_a_fresh_process(folder)
    assert result["outcome"].startswith(f"PixelDataError: {folder}")
    assert result["above_idle_mb"] < MEMORY_LIMIT_MB


def test_truncated_native_pixels_are_refused_before_the_volume_is_allocated(tmp_path: Path):
    folder = write_native_series(tmp_path / "s", 4096, 4096, bytes(128))
    with pytest.raises(PixelDataError, match=r"pixel data truncated: 128 of 33554432 bytes") as error:
        assemble_volume(pick_series(find_series([folder])))
    assert Path(error.value.source).parent == folder


def test_a_compressed_header_declaring_absurd_sizes_is_refused_before_decoding(tmp_path: Path):
    folder = write_jpeg_series(tmp_path / "j", 40000, 40000)
    series = pick_series(find_series([folder]))
    with pytest.raises(PixelDataError, match="the header declares 40000 x 40000 x 1 voxels") as error:
        assemble_volume(series)
    assert Path(error.value.source).parent == folder
    result = read_in_a_fresh_process(folder)
    assert result["outcome"].startswith(f"PixelDataError: {folder}")
    assert result["above_idle_mb"] < MEMORY_LIMIT_MB


def test_a_volume_past_the_voxel_budget_is_refused_as_a_whole(tmp_path: Path):
    folder = write_native_series(tmp_path / "s", 8, 8, slice_pixels(0).astype("<u2").tobytes())
    series = pick_series(find_series([folder]))
    with pytest.raises(VolumeTooLargeError, match="3 slices of 8 x 8 are 192 voxels, more than the limit of 100"):
        assemble_volume(series, max_voxels=100)
    assert assemble_volume(series, max_voxels=192).shape == (3, 8, 8)

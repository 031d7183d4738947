"""Hostile DICOM files: decompression bombs in deflated datasets, and headers that declare more than they hold.

Each attack file is built here, in a temporary folder. Memory is measured in a fresh process that reads the
file: its peak resident size (VmHWM) after the read against its resident size before (after the imports). Not
ru_maxrss: Linux carries that over an exec from the forked copy of the parent, here the whole test session.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hostile_dicom import (
    MiB,
    encoded,
    slice_pixels,
    write_deflated,
    write_jpeg_series,
    write_native_series,
)
from pydicom.dataset import Dataset

from reconstruction.assembly import assemble_volume
from reconstruction.errors import DecompressionBombError, InputError, PixelDataError, VolumeTooLargeError
from reconstruction.series import find_series, pick_series

MEMORY_LIMIT_MB = 200


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

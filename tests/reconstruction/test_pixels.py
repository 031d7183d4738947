"""Pixel decoding: every transfer syntax of one real CT slice, BitsStored masking, rescale rules."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML

from reconstruction.assembly import assemble_volume
from reconstruction.errors import PixelDataError, UnsupportedTransferSyntaxError
from reconstruction.instance import Instance, read_instance
from reconstruction.pixels import (
    JPEGFullProgressionNonHierarchical1012,
    JPEGSpectralSelectionNonHierarchical68,
    decode_rescaled,
    decode_stored,
    fit_bits_stored,
    output_dtype,
    rescale,
)
from reconstruction.series import find_series
from reconstruction.sources import FileRef

SYNTAXES = "ct-slice-transfer-syntaxes"
LOSSLESS = [
    "CTImage.dcm_LittleEndianImplicitTransferSyntax_1.2.840.10008.1.2.dcm",
    "CTImage.dcm_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm",
    "CTImage.dcm_BigEndianExplicitTransferSyntax_1.2.840.10008.1.2.2.dcm",
    "CTImage.dcm_DeflatedExplicitVRLittleEndianTransferSyntax_1.2.840.10008.1.2.1.99.dcm",
    "CTImage.dcm_JPEGProcess14TransferSyntax_1.2.840.10008.1.2.4.57.dcm",
    "CTImage.dcm_JPEGProcess14SV1TransferSyntax_1.2.840.10008.1.2.4.70.dcm",
    "CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm",
    "CTImage.dcm_JPEG2000LosslessOnlyTransferSyntax_1.2.840.10008.1.2.4.90.dcm",
    "CTImage.dcm_RLELosslessTransferSyntax_1.2.840.10008.1.2.5.dcm",
]

# Lossy variants, compared with the uncompressed slice in HU after each file's own rescale. Tolerances: mean
# and 99th percentile of |ΔHU| over the 512x512 slice, and the maximum. Measured values are in brackets.
#  - 4.50 JPEG Baseline keeps 8 bits: dcmcjpeg rescaled the HU range with slope 32.12, so one step is 32 HU
#    and rounding alone costs up to 16 HU, plus the DCT error [mean 19.7, p99 58, max 64].
#  - 4.51/4.53/4.55 keep 12 bits with slope 2.0 (one step 2 HU) plus the DCT error [3.9, 15, 36].
#  - 4.81 JPEG-LS near-lossless bounds the error per sample: NEAR = 1 stored unit = 1 HU [0.7, 1, 1].
#  - 4.91 JPEG 2000 lossy at a high rate [0.57, 2, 5].
LOSSY = {
    "CTImage.dcm_JPEGProcess1TransferSyntax_1.2.840.10008.1.2.4.50.dcm": (25.0, 70.0, 96.0),
    "CTImage.dcm_JPEGProcess2_4TransferSyntax_1.2.840.10008.1.2.4.51.dcm": (5.0, 20.0, 48.0),
    "CTImage.dcm_JPEGProcess6_8TransferSyntax_1.2.840.10008.1.2.4.53.dcm": (5.0, 20.0, 48.0),
    "CTImage.dcm_JPEGProcess10_12TransferSyntax_1.2.840.10008.1.2.4.55.dcm": (5.0, 20.0, 48.0),
    "CTImage.dcm_JPEGLSLossyTransferSyntax_1.2.840.10008.1.2.4.81.dcm": (1.0, 1.0, 1.0),
    "CTImage.dcm_JPEG2000TransferSyntax_1.2.840.10008.1.2.4.91.dcm": (1.0, 3.0, 8.0),
}


def instance(path: Path) -> Instance:
    result = read_instance(FileRef(path))
    assert isinstance(result, Instance), result
    return result


@pytest.fixture(scope="module")
def reference_hu(dicom_dir: Path) -> np.ndarray:
    """CTImage.dcm (Implicit VR LE, uncompressed) in HU, computed independently with pydicom."""
    ds = pydicom.dcmread(dicom_dir / SYNTAXES / "CTImage.dcm")
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_reference_slice_decodes_to_its_hu(dicom_dir: Path, reference_hu: np.ndarray):
    values = decode_rescaled(instance(dicom_dir / SYNTAXES / "CTImage.dcm"))
    assert values.dtype == np.int16 and values.shape == (1, 512, 512)
    assert np.array_equal(values[0], reference_hu)
    assert values.min() == -3024 and values.max() == 1378  # padding -2000 stored; bone


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_transfer_syntaxes_decode_exactly(dicom_dir: Path, reference_hu: np.ndarray, name: str):
    values = decode_rescaled(instance(dicom_dir / SYNTAXES / name))
    assert values.dtype == np.int16
    assert np.array_equal(values[0], reference_hu)


@pytest.mark.parametrize("name", sorted(LOSSY))
def test_lossy_transfer_syntaxes_decode_within_tolerance(dicom_dir: Path, reference_hu: np.ndarray, name):
    mean_limit, p99_limit, max_limit = LOSSY[name]
    values = decode_rescaled(instance(dicom_dir / SYNTAXES / name))
    error = np.abs(values[0].astype(np.float64) - reference_hu)
    assert error.mean() <= mean_limit
    assert np.percentile(error, 99) <= p99_limit
    assert error.max() <= max_limit


@pytest.mark.parametrize("uid", [JPEGSpectralSelectionNonHierarchical68, JPEGFullProgressionNonHierarchical1012])
def test_jpeg_without_a_pydicom_plugin_decodes_through_libjpeg(uid: str):
    with pytest.raises(NotImplementedError):
        pydicom.pixels.get_decoder(uid)  # why the fallback exists; the decode is checked in the LOSSY table


def test_unsupported_transfer_syntax_names_the_syntax_and_the_file(dicom_dir: Path):
    path = dicom_dir / SYNTAXES / "CTImage.dcm_JPEGProcess2_4TransferSyntax_1.2.840.10008.1.2.4.51.dcm"
    mpeg = dataclasses.replace(instance(path), transfer_syntax_uid=MPEG2MPML)
    with pytest.raises(UnsupportedTransferSyntaxError) as error:
        decode_stored(mpeg)
    assert error.value.source == str(path)
    assert "MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100)" in error.value.problem


def test_libjpeg_fallback_failure_names_the_syntax_and_the_file(dicom_dir: Path, tmp_path: Path):
    name = "CTImage.dcm_JPEGProcess6_8TransferSyntax_1.2.840.10008.1.2.4.53.dcm"
    ds = pydicom.dcmread(dicom_dir / SYNTAXES / name)
    ds.PixelData = encapsulate([b"\xff\xd8 this is no JPEG stream \xff\xd9"])
    broken = tmp_path / "broken_4.53.dcm"
    ds.save_as(broken)
    with pytest.raises(UnsupportedTransferSyntaxError) as error:
        decode_stored(instance(broken))
    assert error.value.source == str(broken)
    assert "Spectral Selection" in error.value.problem and "(1.2.840.10008.1.2.4.53)" in error.value.problem


def test_enhanced_ct_frames_are_slices(dicom_dir: Path):
    """CT0012: enhanced multi-frame JPEG 4.51, no Basic Offset Table; geometry in the functional groups."""
    path = dicom_dir / SYNTAXES / "CT0012.fragmented_no_bot_jpeg_baseline.51.dcm"
    ct = instance(path)
    assert ct.number_of_frames == 2
    assert [f.position[2] for f in ct.frames] == [-159.0, -149.0]
    assert {f.orientation for f in ct.frames} == {(-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)}
    assert {(f.pixel_spacing, f.slice_thickness, f.rescale_intercept) for f in ct.frames} == {
        ((0.388672, 0.388672), 10.0, -1024.0)
    }
    values = decode_rescaled(ct)
    ds = pydicom.dcmread(path)
    assert np.array_equal(values, ds.pixel_array.astype(np.int32) - 1024)
    [series] = find_series([path]).series
    volume = assemble_volume(series)
    assert volume.shape == (2, 512, 512)
    assert volume.slice_spacings.tolist() == pytest.approx([10.0])
    # The normal is (0, 0, -1) (row direction -x): ascending along it, z goes from -149 to -159.
    assert volume.positions[:, 2].tolist() == [-149.0, -159.0]


def test_j2k_pixel_representation_mismatch(dicom_dir: Path):
    """The J2K stream is unsigned while PixelRepresentation is 1 (BitsStored 13): the values are reinterpreted
    as signed, so padding reads -2000 and not 6192."""
    values = decode_rescaled(instance(dicom_dir / "pydicom-quirks" / "J2K_pixelrep_mismatch.dcm"))
    assert values.min() == -2000 and values.max() == 1896
    assert np.count_nonzero(values == -2000) > 50_000  # the padding outside the field of view


# -- BitsStored: the 12-bit files and their NIfTI references -------------------------------------------------
def read_nifti(path: Path) -> np.ndarray:
    """A NIfTI-1 file's voxels as (z, y, x) int16, parsed with numpy (nibabel is not a dependency)."""
    raw = path.read_bytes()
    assert struct.unpack("<i", raw[:4])[0] == 348 and raw[344:348] == b"n+1\0"
    dims = struct.unpack("<8h", raw[40:56])
    datatype = struct.unpack("<h", raw[70:72])[0]
    assert datatype == 4  # DT_INT16
    offset = int(struct.unpack("<f", raw[108:112])[0])
    slope, intercept = struct.unpack("<ff", raw[112:120])
    assert (slope, intercept) in ((0.0, 0.0), (1.0, 0.0))
    nx, ny, nz = dims[1:4]
    return np.frombuffer(raw, dtype="<i2", count=nx * ny * nz, offset=offset).reshape(nz, ny, nx)


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("12bitUnsigned.dcm", "2.nii"),
        ("12bitUnsigned_0x0F0F.dcm", "3.nii"),
        ("12bitSigned_0x0F0F.dcm", "4.nii"),
    ],
)
def test_12_bit_files_match_their_reference(dicom_dir: Path, name: str, reference: str):
    folder = dicom_dir / "mr-12bit-high-bits"
    mosaic = decode_rescaled(instance(folder / "In" / name))[0]
    expected = read_nifti(folder / "Ref" / reference)
    # A Siemens mosaic: 64x64 tiles in a 6x6 grid, row by row; dcm2niix stores rows bottom-up (y flipped).
    n, size = expected.shape[0], expected.shape[1]
    tiles = np.stack([mosaic[(k // 6) * size : (k // 6 + 1) * size, (k % 6) * size : (k % 6 + 1) * size]
                      for k in range(n)])
    assert np.array_equal(tiles[:, ::-1, :], expected)


def test_12_bit_stripes_read_as_documented(dicom_dir: Path):
    folder = dicom_dir / "mr-12bit-high-bits" / "In"
    signed = decode_stored(instance(folder / "12bitSigned_0x0F0F.dcm"))
    unsigned = decode_stored(instance(folder / "12bitUnsigned_0x0F0F.dcm"))
    assert {-241, -1} <= set(np.unique(signed).tolist())
    assert signed.min() >= -2048 and signed.max() <= 2047
    assert {3855, 4095} <= set(np.unique(unsigned).tolist())
    assert unsigned.max() <= 4095


@pytest.mark.parametrize(
    ("stored", "bits", "signed", "expected"),
    [
        ([0x0F0F, 0xFFFF, 0x0800, 0x07FF], 12, True, [-241, -1, -2048, 2047]),
        ([0x0F0F, 0xFFFF, 0x0800, 0x07FF], 12, False, [3855, 4095, 2048, 2047]),
        ([0xE001, 0x1FFF, 0xF001], 13, True, [1, -1, -4095]),
        ([0x8000, 0x7FFF], 16, True, [-32768, 32767]),
        ([0xFF, 0x80], 8, False, [255, 128]),
    ],
)
def test_fit_bits_stored(stored, bits: int, signed: bool, expected):
    dtype = np.uint16 if max(stored) > 0xFF or bits > 8 else np.uint8
    result = fit_bits_stored(np.array(stored, dtype=dtype), bits, signed)
    assert result.tolist() == expected
    assert result.dtype.kind == ("i" if signed else "u")


# -- rescale rules -------------------------------------------------------------------------------------------
def test_rescale_rounds_and_clips_to_int16():
    stored = np.array([0, 1, 2, 3, 40000], dtype=np.uint16)
    assert rescale(stored, 1.0, -1024.0, np.dtype(np.int16)).tolist() == [-1024, -1023, -1022, -1021, 32767]
    assert rescale(stored, 0.5, 0.0, np.dtype(np.int16)).tolist() == [0, 0, 1, 2, 20000]  # halves to even
    assert rescale(stored, 3.0, -1000.0, np.dtype(np.int16)).tolist() == [-1000, -997, -994, -991, 32767]
    assert rescale(stored, 0.5, 0.0, np.dtype(np.float32)).tolist() == [0.0, 0.5, 1.0, 1.5, 20000.0]


def test_output_dtype_rules(dicom_dir: Path):
    mr = instance(dicom_dir / "pydicom-quirks" / "MR_small.dcm")
    frame = mr.frames[0]
    assert output_dtype("CT", [(mr, dataclasses.replace(frame, rescale_slope=0.37))]) == np.int16
    assert output_dtype("MR", [(mr, frame)]) == np.int16
    assert output_dtype("MR", [(mr, dataclasses.replace(frame, rescale_slope=0.5))]) == np.float32
    assert output_dtype("MR", [(mr, dataclasses.replace(frame, rescale_intercept=0.5))]) == np.float32
    wide = dataclasses.replace(mr, bits_stored=16, pixel_representation=0)
    assert output_dtype("MR", [(wide, frame)]) == np.float32  # 0..65535 does not fit int16


def test_rt_dose_grid_is_a_float_volume(dicom_dir: Path):
    """rtdose.dcm: 15 uint32 frames scaled by DoseGridScaling, placed by GridFrameOffsetVector (5 mm)."""
    path = dicom_dir / "pydicom-quirks" / "rtdose.dcm"
    ds = pydicom.dcmread(path)
    [series] = find_series([path]).series
    volume = assemble_volume(series)
    assert volume.voxels.dtype == np.float32 and volume.shape == (15, 10, 10)
    assert volume.units == "RELATIVE"  # DoseUnits
    assert volume.slice_spacings.tolist() == pytest.approx([5.0] * 14)
    expected = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)
    assert np.allclose(volume.voxels, expected, rtol=1e-6)
    assert volume.positions[0].tolist() == pytest.approx([189.43125, 199.43125, -761.87])
    assert volume.positions[-1].tolist() == pytest.approx([189.43125, 199.43125, -691.87])


def test_truncated_pixel_data_is_a_pixel_data_error(dicom_dir: Path):
    path = dicom_dir / "pydicom-quirks" / "MR_truncated.dcm"
    with pytest.raises(PixelDataError, match="truncated: 8130 of 8192 bytes") as error:
        decode_stored(instance(path))
    assert error.value.source == str(path)

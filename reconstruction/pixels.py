"""Pixel decoding: an instance's frames -> stored values (fitted to BitsStored) -> rescaled output values.

Native transfer syntaxes are read straight from the file at the pixel data offset the header reader found
(a deflated dataset through ``deflate``'s bounded inflating reader), never more than the header declares, and
only after the declared size is checked (``check_declared_size``); their stored values are masked (unsigned)
or sign-extended (signed) to BitsStored, because the unused high bits may hold anything. Compressed transfer
syntaxes are decoded frame by frame by pydicom's decoder plugins; JPEG 4.53 and 4.55, for which pydicom 3.0.2
has no plugin, by libjpeg called directly. Rescaling applies each frame's RescaleSlope/RescaleIntercept: CT
ends up int16 Hounsfield units (rounded, clipped to int16), other modalities int16 when slope and intercept
keep integers in range, else float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import numpy as np
import pydicom
from pydicom.encaps import generate_frames
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
)

from .deflate import inflated_dataset
from .errors import InputError, PixelDataError, UnsupportedTransferSyntaxError
from .frames import Frame
from .instance import Instance
from .sources import Archives

# Retired JPEG processes, by their PS3.6 keywords: pydicom 3 names only the transfer syntaxes still current.
JPEGSpectralSelectionNonHierarchical68 = UID("1.2.840.10008.1.2.4.53")
JPEGFullProgressionNonHierarchical1012 = UID("1.2.840.10008.1.2.4.55")

NATIVE_TRANSFER_SYNTAXES = {
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
}
LIBJPEG_TRANSFER_SYNTAXES = {
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGSpectralSelectionNonHierarchical68,
    JPEGFullProgressionNonHierarchical1012,
    JPEGLossless,
    JPEGLosslessSV1,
}
"""JPEG (ISO 10918) transfer syntaxes libjpeg decodes; used directly where pydicom has no plugin."""

DEFAULT_MAX_VOXELS = 1 << 30
"""The most voxels a header may declare for one instance or one volume (2 GiB as int16) before it is refused."""

INT16 = np.dtype(np.int16)
FLOAT32 = np.dtype(np.float32)
_INT16_MIN, _INT16_MAX = np.iinfo(np.int16).min, np.iinfo(np.int16).max


def decode_stored(
    instance: Instance, archives: Archives | None = None, *, max_voxels: int = DEFAULT_MAX_VOXELS
) -> np.ndarray:
    """Every frame's stored values, shape (frames, rows, columns), in native byte order.

    Requires a monochrome instance (one sample per pixel) with BitsAllocated 8, 16 or 32. Zip members are
    read through ``archives`` if given. Raises UnsupportedTransferSyntaxError or PixelDataError, naming the
    file, when the pixels cannot be decoded or their declared size is refused (`check_declared_size`).
    """
    _check_format(instance)
    check_declared_size(instance, max_voxels)
    with contextlib.nullcontext(archives) if archives is not None else Archives() as reader:
        data = _pixel_bytes(instance, reader)
    if instance.transfer_syntax_uid in NATIVE_TRANSFER_SYNTAXES:
        return _native(instance, data)
    return _encapsulated(instance, data)


def check_declared_size(instance: Instance, max_voxels: int = DEFAULT_MAX_VOXELS) -> None:
    """Refuse, before anything is allocated for it, an instance whose header declares more than ``max_voxels``
    voxels, or native pixel data shorter than Rows × Columns × frames × SamplesPerPixel × BitsAllocated / 8.

    Raises PixelDataError naming the file.
    """
    voxels = instance.rows * instance.columns * instance.number_of_frames
    if voxels > max_voxels:
        raise PixelDataError(
            instance.path,
            f"the header declares {instance.rows} x {instance.columns} x {instance.number_of_frames} voxels, "
            f"more than the limit of {max_voxels}",
        )
    length = instance.pixel_length
    if instance.transfer_syntax_uid in NATIVE_TRANSFER_SYNTAXES and length is not None:
        _check_length(instance, length)


def decode_rescaled(instance: Instance, dtype: np.dtype | None = None) -> np.ndarray:
    """Every frame rescaled by its own slope/intercept, (frames, rows, columns) in ``dtype``.

    ``dtype`` defaults to `output_dtype` for this instance alone.
    """
    dtype = dtype or output_dtype(instance.modality, [(instance, f) for f in instance.frames])
    stored = decode_stored(instance)
    out = np.empty(stored.shape, dtype=dtype)
    for frame in instance.frames:
        rescale(
            stored[frame.index], frame.rescale_slope, frame.rescale_intercept, dtype, out=out[frame.index]
        )
    return out


def output_dtype(modality: str, frames: Iterable[tuple[Instance, Frame]]) -> np.dtype:
    """int16 for CT (HU); for other modalities int16 if every rescale maps the stored range onto integers
    within int16, else float32."""
    if modality.upper() == "CT":
        return INT16
    for instance, frame in frames:
        slope, intercept = frame.rescale_slope, frame.rescale_intercept
        if not (float(slope).is_integer() and float(intercept).is_integer()):
            return FLOAT32
        low, high = _stored_range(instance)
        ends = (low * slope + intercept, high * slope + intercept)
        if min(ends) < _INT16_MIN or max(ends) > _INT16_MAX:
            return FLOAT32
    return INT16


def rescale(
    stored: np.ndarray, slope: float, intercept: float, dtype: np.dtype, out: np.ndarray | None = None
) -> np.ndarray:
    """``stored * slope + intercept`` in ``dtype`` (into ``out`` if given, which must have that dtype and
    shape); int16 output is rounded and clipped to the int16 range."""
    if out is None:
        out = np.empty(stored.shape, dtype=dtype)
    if np.dtype(dtype) != INT16:
        np.add(np.multiply(stored, slope, dtype=np.float64), intercept, out=out, casting="unsafe")
        return out
    if slope == 1.0 and float(intercept).is_integer() and stored.size:
        shift = np.int32(intercept)
        if int(stored.min()) + shift >= _INT16_MIN and int(stored.max()) + shift <= _INT16_MAX:
            # The common CT case: one pass, no temporaries, nothing to clip.
            np.add(stored, shift, out=out, dtype=np.int32, casting="unsafe")
            return out
        values = stored.astype(np.int64) + shift
    else:
        values = np.rint(np.multiply(stored, slope, dtype=np.float64) + intercept)
    np.clip(values, _INT16_MIN, _INT16_MAX, out=values)
    out[...] = values
    return out


def fit_bits_stored(values: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Mask unsigned values to their low ``bits_stored`` bits, or sign-extend signed ones from that bit.

    Requires an integer array whose itemsize holds ``bits_stored`` bits.
    """
    width = values.dtype.itemsize * 8
    if bits_stored <= 0 or bits_stored >= width:
        return values.astype(np.dtype(f"{'i' if signed else 'u'}{width // 8}"), copy=False)
    unsigned = values.view(np.dtype(f"u{width // 8}")) & np.array(
        (1 << bits_stored) - 1, dtype=f"u{width // 8}"
    )
    if not signed:
        return unsigned
    shift = width - bits_stored
    # Shift the sign bit into the top bit, then shift back arithmetically: sign extension without branches.
    return (unsigned << shift).view(np.dtype(f"i{width // 8}")) >> shift


def transfer_syntax_label(uid: str) -> str:
    """'JPEG Extended (Process 2 and 4) (1.2.840.10008.1.2.4.51)': the name pydicom knows, and the UID."""
    name = UID(uid).name
    return f"{name} ({uid})" if name != uid else uid


def _check_format(instance: Instance) -> None:
    if instance.samples_per_pixel != 1 or not instance.photometric_interpretation.startswith("MONOCHROME"):
        raise PixelDataError(
            instance.path,
            f"color images are not supported ({instance.photometric_interpretation}, "
            f"{instance.samples_per_pixel} samples per pixel)",
        )
    if instance.bits_allocated not in (8, 16, 32):
        raise PixelDataError(instance.path, f"BitsAllocated {instance.bits_allocated} is not supported")
    if not 0 < instance.bits_stored <= instance.bits_allocated:
        raise PixelDataError(
            instance.path,
            f"BitsStored {instance.bits_stored} does not fit BitsAllocated {instance.bits_allocated}",
        )


def _pixel_bytes(instance: Instance, archives: Archives) -> bytes:
    """The Pixel Data value: native data as far as the header needs it, encapsulated data from its start to
    the end of the file."""
    ref = instance.ref
    if instance.pixel_offset is None:
        raise PixelDataError(instance.path, "no pixel data offset")
    length = instance.pixel_length
    if instance.transfer_syntax_uid in NATIVE_TRANSFER_SYNTAXES:
        length = min(_native_size(instance), length if length is not None else _native_size(instance))
    end = None if length is None else instance.pixel_offset + length
    try:
        if instance.transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
            with archives.open(ref) as fp:
                reader = inflated_dataset(fp, source=instance.path, max_bytes=end or 0)
                reader.seek(instance.pixel_offset)
                return reader.read(length or 0)
        if ref.member is not None:
            return archives.read_bytes(ref)[instance.pixel_offset : end]
        with open(ref.path, "rb") as fp:
            fp.seek(instance.pixel_offset)
            return fp.read(-1 if end is None else end - instance.pixel_offset)
    except InputError as e:
        raise PixelDataError(instance.path, e.problem) from e
    except (OSError, AttributeError, ValueError, EOFError) as e:
        raise PixelDataError(instance.path, f"cannot read the pixel data ({e})") from e


def _native(instance: Instance, data: bytes) -> np.ndarray:
    signed = instance.pixel_representation == 1
    order = ">" if instance.transfer_syntax_uid == ExplicitVRBigEndian else "<"
    itemsize = instance.bits_allocated // 8
    dtype = np.dtype(f"{order}{'i' if signed else 'u'}{itemsize}")
    shape = (instance.number_of_frames, instance.rows, instance.columns)
    count = shape[0] * shape[1] * shape[2]
    _check_length(instance, len(data))
    values = np.frombuffer(data, dtype=dtype, count=count).reshape(shape)
    values = values.astype(dtype.newbyteorder("="), copy=False)
    return fit_bits_stored(values, instance.bits_stored, signed)


def _native_size(instance: Instance) -> int:
    """Bytes of native pixel data the header declares."""
    frame = instance.rows * instance.columns * instance.samples_per_pixel * instance.bits_allocated // 8
    return frame * instance.number_of_frames


def _check_length(instance: Instance, length: int) -> None:
    if length < _native_size(instance):
        raise PixelDataError(instance.path, f"pixel data truncated: {length} of {_native_size(instance)} bytes")


def _encapsulated(instance: Instance, data: bytes) -> np.ndarray:
    uid = instance.transfer_syntax_uid
    decoder = _pydicom_decoder(uid)
    if decoder is not None:
        frames = _decode_with_pydicom(instance, decoder, data)
    elif uid in LIBJPEG_TRANSFER_SYNTAXES:
        frames = _decode_with_libjpeg(instance, data)
    else:
        raise UnsupportedTransferSyntaxError(
            instance.path, f"no installed decoder handles {transfer_syntax_label(uid)}"
        )
    shape = (instance.rows, instance.columns)
    for i, frame in enumerate(frames):
        if frame.shape != shape:
            raise PixelDataError(instance.path, f"frame {i} decoded to {frame.shape}, expected {shape}")
    return np.stack(frames)


def _pydicom_decoder(uid: str):  # -> pydicom Decoder | None
    try:
        decoder = pydicom.pixels.get_decoder(uid)
    except NotImplementedError:
        return None
    return decoder if decoder.is_available else None


def _decode_with_pydicom(instance: Instance, decoder, data: bytes) -> list[np.ndarray]:
    options = {
        "rows": instance.rows,
        "columns": instance.columns,
        "samples_per_pixel": 1,
        "bits_allocated": instance.bits_allocated,
        "bits_stored": instance.bits_stored,
        "pixel_representation": instance.pixel_representation,
        "photometric_interpretation": instance.photometric_interpretation,
        "number_of_frames": instance.number_of_frames,
        "transfer_syntax_uid": UID(instance.transfer_syntax_uid),
        "pixel_keyword": "PixelData",
    }
    try:
        # as_array, not iter_array: pydicom 3.0.2's iter_array fails sign-correcting read-only frames.
        arr, _ = decoder.as_array(data, raw=True, **options)
    except Exception as e:  # plugins raise RuntimeError, ValueError, OSError... on corrupt streams
        raise PixelDataError(
            instance.path, f"cannot decode {transfer_syntax_label(instance.transfer_syntax_uid)}: {_short(e)}"
        ) from e
    return list(arr.reshape(instance.number_of_frames, instance.rows, instance.columns))


def _decode_with_libjpeg(instance: Instance, data: bytes) -> list[np.ndarray]:
    label = transfer_syntax_label(instance.transfer_syntax_uid)
    try:
        import libjpeg
    except ImportError as e:
        raise UnsupportedTransferSyntaxError(instance.path, f"no installed decoder handles {label}") from e
    signed = instance.pixel_representation == 1
    frames = []
    try:
        for fragment in generate_frames(data, number_of_frames=instance.number_of_frames):
            decoded = np.asarray(libjpeg.decode(fragment))
            # JPEG stores unsigned samples: reinterpret them at BitsStored when the data is signed.
            frames.append(fit_bits_stored(decoded, instance.bits_stored, signed) if signed else decoded)
    except Exception as e:  # libjpeg raises RuntimeError for streams it cannot decode
        raise UnsupportedTransferSyntaxError(
            instance.path, f"libjpeg cannot decode {label}: {_short(e)}"
        ) from e
    if len(frames) != instance.number_of_frames:
        raise PixelDataError(
            instance.path, f"{len(frames)} frames found, {instance.number_of_frames} expected"
        )
    return frames


def _stored_range(instance: Instance) -> tuple[int, int]:
    bits = instance.bits_stored or instance.bits_allocated
    if instance.pixel_representation == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _short(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text[:200] or type(error).__name__

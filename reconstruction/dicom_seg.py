"""DICOM Segmentation objects (SEG), read and written with highdicom.

Reading: one `Structure` per segment, named by its SegmentLabel, coloured by its RecommendedDisplayCIELabValue
(converted to sRGB; the palette's colour when it has none), with its coded category and type kept. BINARY and
FRACTIONAL segmentations are read (a fractional voxel is inside when it is at least half occupied). Each frame
is placed on the series' grid by its own plane position: on the slice at its distance along the stack normal,
shifted in-plane by whole pixels. A SEG whose frames do not lie on the series' slices and pixels (another
orientation or pixel spacing, planes between slices, sub-pixel shifts) does not fit that series.

Writing (`write_seg`): the mask of a structure grown in a room, as a BINARY SEG of one segment that references
the source images it was grown on, so that it can be exported to a PACS later.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import ReconstructionError
from .segmentation import Segmentation, SegmentationError, SegmentationMismatchError
from .series import ORIENTATION_TOLERANCE, stack_normal
from .sources import FileRef
from .structures import Structure, StructureMask, cielab_to_srgb, palette_color
from .volume import Volume

PLANE_TOLERANCE_MM = 0.05
"""How far a frame's plane may lie from a slice's (along the normal) and still be that slice's."""
PIXEL_TOLERANCE = 0.01
"""How far from a whole pixel a frame's in-plane offset may be."""


def read_seg(ref: FileRef) -> Segmentation:
    """The Segmentation of a DICOM SEG file. Raises SegmentationError naming the file and the problem."""
    import highdicom as hd
    import pydicom

    source = str(ref)
    try:
        with ref.open() as stream:
            ds = pydicom.dcmread(stream)
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    except ReconstructionError:
        raise
    except Exception as error:  # pydicom and highdicom raise many kinds on damaged files
        raise SegmentationError(source, f"not a readable DICOM SEG ({_short(error)})") from None
    fractional = seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    structures = []
    for n, number in enumerate(seg.get_segment_numbers()):
        description = seg.get_segment_description(number)
        lab = description.get("RecommendedDisplayCIELabValue")
        color = cielab_to_srgb(tuple(lab)) if lab is not None else palette_color(n)
        code = {"category": _concept(description.segmented_property_category),
                "type": _concept(description.segmented_property_type)}
        structures.append(Structure(int(number), str(description.segment_label), color, code))
    series = {str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", [])}
    instances = {str(i.ReferencedSOPInstanceUID) for item in ds.get("ReferencedSeriesSequence", [])
                 for i in item.get("ReferencedInstanceSequence", []) if "ReferencedSOPInstanceUID" in i}
    frames = _frames(ds, source)
    _check_pixel_data(ds, source)
    maximum = float(ds.get("MaximumFractionalValue", 255)) if fractional else 1.0

    def place(volume: Volume) -> list[StructureMask]:
        return _place(ds, frames, structures, volume, source, maximum)

    return Segmentation(
        format="SEG", source=source, files=(ref,), structures=tuple(structures), place=place,
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        series_instance_uids=frozenset(series), referenced_instances=frozenset(instances))


def _concept(code) -> dict[str, str]:
    return {"value": str(code.value), "scheme": str(code.scheme_designator), "meaning": str(code.meaning)}


def _short(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:200]


def _frames(ds, source: str) -> list[tuple[int, np.ndarray]]:
    """(segment number, ImagePositionPatient) of each frame."""
    shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]
    out = []
    for n, group in enumerate(ds.get("PerFrameFunctionalGroupsSequence", [])):
        try:
            segment = int(_item(group, shared, "SegmentIdentificationSequence").ReferencedSegmentNumber)
            position = np.asarray(_item(group, shared, "PlanePositionSequence").ImagePositionPatient, dtype=float)
        except (AttributeError, TypeError, ValueError, IndexError):
            raise SegmentationError(source, f"frame {n + 1} has no segment number or plane position") from None
        out.append((segment, position))
    frames = int(ds.get("NumberOfFrames", 1))
    if len(out) != frames:
        raise SegmentationError(source, f"{frames} frames but {len(out)} per-frame descriptions")
    return out


def _check_pixel_data(ds, source: str) -> None:
    """Raise SegmentationError when native (uncompressed) frames are cut short: BINARY frames are packed 8
    pixels a byte across frame boundaries, FRACTIONAL ones a byte a pixel. Encapsulated frames are checked as
    they are decoded."""
    if "PixelData" not in ds:
        raise SegmentationError(source, "no frames (PixelData is missing)")
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return
    pixels = int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1))
    expected = (pixels + 7) // 8 if int(ds.get("BitsAllocated", 1)) == 1 else pixels * int(ds.BitsAllocated) // 8
    if len(ds.PixelData) < expected:
        raise SegmentationError(source, f"the frames are cut short ({len(ds.PixelData)} of {expected} bytes)")


def _item(group, shared, keyword: str):
    """The first item of a functional group macro, per frame or else shared."""
    for source in (group, shared):
        items = source.get(keyword) if source is not None else None
        if items:
            return items[0]
    raise AttributeError(keyword)


def _place(ds, frames, structures: Sequence[Structure], volume: Volume, source: str,
           maximum: float) -> list[StructureMask]:
    from pydicom.pixels import iter_pixels

    shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]
    try:
        orientation = np.asarray(_item(None, shared, "PlaneOrientationSequence").ImageOrientationPatient, float)
        spacing = np.asarray(_item(None, shared, "PixelMeasuresSequence").PixelSpacing, dtype=float)
    except (AttributeError, TypeError, ValueError):
        raise SegmentationError(source, "no shared plane orientation or pixel spacing") from None
    reference = np.concatenate([volume.row_direction, volume.column_direction])
    if np.max(np.abs(orientation - reference)) > ORIENTATION_TOLERANCE:
        raise SegmentationMismatchError(source, "its frames have another orientation than the series' slices")
    if np.max(np.abs(spacing - np.asarray(volume.pixel_spacing))) > 1e-4 * max(1.0, float(spacing.max())):
        raise SegmentationMismatchError(
            source, f"its pixel spacing {list(spacing)} mm is not the series' {list(volume.pixel_spacing)} mm")
    normal = stack_normal(orientation)
    distances = volume.positions @ normal
    rows, columns = int(ds.Rows), int(ds.Columns)
    placed: dict[int, list[tuple[int, int, int, np.ndarray]]] = {s.number: [] for s in structures}
    try:
        for (segment, position), pixels in zip(frames, iter_pixels(ds), strict=True):
            if segment not in placed:
                raise SegmentationError(source, f"a frame refers to segment {segment}, which is not described")
            inside = pixels >= 0.5 * maximum if maximum > 1 else pixels.astype(bool)
            if not inside.any():
                continue
            k = int(np.argmin(np.abs(distances - position @ normal)))
            if abs(distances[k] - position @ normal) > PLANE_TOLERANCE_MM:
                raise SegmentationMismatchError(
                    source, f"a frame lies {abs(distances[k] - position @ normal):.2f} mm from the nearest slice")
            delta = position - volume.positions[k]
            offset = np.array([delta @ volume.column_direction / volume.pixel_spacing[0],
                               delta @ volume.row_direction / volume.pixel_spacing[1]])
            if np.max(np.abs(offset - np.round(offset))) > PIXEL_TOLERANCE:
                raise SegmentationMismatchError(source, "its frames are shifted by a fraction of a pixel")
            r0, c0 = (int(v) for v in np.round(offset))
            placed[segment].append((k, r0, c0, inside.reshape(rows, columns)))
    except ReconstructionError:
        raise
    except Exception as error:  # a truncated or damaged pixel data element
        raise SegmentationError(source, f"its pixel data cannot be decoded ({_short(error)})") from None
    return [_assemble(s, placed[s.number], volume, source) for s in structures]


def _assemble(structure: Structure, frames, volume: Volume, source: str) -> StructureMask:
    """The crop of one segment's frames on the volume's grid."""
    _, n_rows, n_columns = volume.shape
    boxes = []
    for k, r0, c0, inside in frames:
        rows, columns = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
        box = (k, r0 + rows[0], r0 + rows[-1] + 1, c0 + columns[0], c0 + columns[-1] + 1)
        if box[1] < 0 or box[3] < 0 or box[2] > n_rows or box[4] > n_columns:
            raise SegmentationMismatchError(source, f"segment {structure.number} reaches outside the series' slices")
        boxes.append(box)
    if not boxes:
        return StructureMask(structure, (0, 0, 0), np.zeros((0, 0, 0), dtype=bool))
    b = np.array(boxes)
    lo = (int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 3].min()))
    hi = (int(b[:, 0].max()) + 1, int(b[:, 2].max()), int(b[:, 4].max()))
    mask = np.zeros(tuple(h - low for h, low in zip(hi, lo, strict=True)), dtype=bool)
    for k, r0, c0, inside in frames:
        # The frame's part that lies on the grid (it may be larger than the structure's box).
        top, left = max(0, lo[1] - r0), max(0, lo[2] - c0)
        bottom, right = min(inside.shape[0], hi[1] - r0), min(inside.shape[1], hi[2] - c0)
        target = mask[k - lo[0], r0 + top - lo[1]: r0 + bottom - lo[1], c0 + left - lo[2]: c0 + right - lo[2]]
        target |= inside[top:bottom, left:right]
    return StructureMask(structure, lo, mask)


def write_seg(
    mask: StructureMask, volume: Volume, source_images: Sequence, *, series_number: int = 900,
    description: str = "Grown structure", algorithm: str = "theatrum region growing",
) -> bytes:
    """A BINARY DICOM SEG of one structure's mask on ``volume``, referencing ``source_images`` (the series'
    pydicom datasets, one per slice, in the volume's stack order). Requires a non-empty mask."""
    import io

    import highdicom as hd
    from pydicom.sr.codedict import codes

    structure = mask.structure
    labels = np.zeros(volume.shape, dtype=bool)
    k0, j0, i0 = mask.start
    nk, nj, ni = mask.mask.shape
    labels[k0:k0 + nk, j0:j0 + nj, i0:i0 + ni] = mask.mask
    description_item = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=structure.name[:64] or "structure",
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm, version="1", family=codes.cid7162.ArtificialIntelligence),
    )
    description_item.RecommendedDisplayCIELabValue = list(
        hd.color.CIELabColor(*_rgb_to_lab(structure.color)).value)
    seg = hd.seg.Segmentation(
        source_images=list(source_images),
        pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description_item],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Theatrum",
        manufacturer_model_name="theatrum",
        software_versions="theatrum",
        device_serial_number="0",
        series_description=description,
        omit_empty_frames=True,
    )
    buffer = io.BytesIO()
    seg.save_as(buffer)
    return buffer.getvalue()


def _rgb_to_lab(color: tuple[int, int, int]) -> tuple[float, float, float]:
    from highdicom.color import CIELabColor

    lab = CIELabColor.from_rgb(*color)
    return (lab.l_star, lab.a_star, lab.b_star)

"""Frames: the slices one DICOM image holds, each with its own geometry (LPS mm) and rescale.

Where a header keeps each frame's geometry depends on its kind of object:

- a classic single-frame image: ImagePositionPatient, ImageOrientationPatient, PixelSpacing at the top level;
- a classic multi-frame RT Dose grid: the first frame's position, the others along the normal by
  GridFrameOffsetVector (other classic multi-frame images give no per-frame positions);
- an enhanced multi-frame image: the functional groups, each frame's Per-Frame item before the Shared item
  (Pixel Measures, Plane Position, Plane Orientation, Pixel Value Transformation, the Frame Type macro).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from pydicom.dataset import Dataset

from .header_values import BadValue, integer, number, positive, strings, vector


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


def read_frames(ds: Dataset, modality: str) -> tuple[Frame, ...]:
    """Every frame of the image whose header is ``ds``. Raises BadValue for a value that cannot be one."""
    number_of_frames = integer(ds, "NumberOfFrames", 1) or 1
    if number_of_frames < 1:
        raise BadValue("NumberOfFrames", number_of_frames)
    image_type = strings(ds, "ImageType")
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        frames = functional_group_frames(ds, number_of_frames)
    elif number_of_frames > 1:
        frames = classic_multi_frames(ds, number_of_frames, image_type)
    else:
        frames = (classic_frame(ds, 0, image_type),)
    if modality == "RTDOSE":
        scaling = number(ds, "DoseGridScaling", 1.0)
        frames = tuple(replace(f, rescale_slope=scaling, rescale_intercept=0.0) for f in frames)
    return frames


def classic_frame(ds: Dataset, index: int, frame_type: tuple[str, ...]) -> Frame:
    """Frame ``index`` with the top-level geometry and rescale of a classic image."""
    return Frame(
        index=index,
        position=vector(ds, "ImagePositionPatient", 3),  # type: ignore[arg-type]
        orientation=vector(ds, "ImageOrientationPatient", 6),  # type: ignore[arg-type]
        pixel_spacing=vector(ds, "PixelSpacing", 2),  # type: ignore[arg-type]
        slice_thickness=positive(number(ds, "SliceThickness", None)),
        rescale_slope=number(ds, "RescaleSlope", 1.0) or 1.0,
        rescale_intercept=number(ds, "RescaleIntercept", 0.0) or 0.0,
        frame_type=frame_type,
    )


def classic_multi_frames(ds: Dataset, count: int, image_type: tuple[str, ...]) -> tuple[Frame, ...]:
    """Classic multi-frame: a dose grid positions its frames by GridFrameOffsetVector; others have no
    per-frame positions (their frames keep position None)."""
    first = classic_frame(ds, 0, image_type)
    offsets = vector(ds, "GridFrameOffsetVector", count)
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


def functional_group_frames(ds: Dataset, count: int) -> tuple[Frame, ...]:
    """Enhanced multi-frame: each frame's geometry from its Per-Frame item, else from the Shared item."""
    shared_seq = ds.get("SharedFunctionalGroupsSequence") or []
    shared = shared_seq[0] if len(shared_seq) else Dataset()
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if per_frame and len(per_frame) != count:
        raise BadValue("PerFrameFunctionalGroupsSequence length", f"{len(per_frame)} items for {count} frames")
    top_slope = number(ds, "RescaleSlope", 1.0) or 1.0
    top_intercept = number(ds, "RescaleIntercept", 0.0) or 0.0
    frames = []
    for i in range(count):
        groups = (per_frame[i], shared) if per_frame else (shared,)
        measures = _macro(groups, "PixelMeasuresSequence")
        transform = _macro(groups, "PixelValueTransformationSequence")
        position = _macro(groups, "PlanePositionSequence")
        orientation = _macro(groups, "PlaneOrientationSequence")
        slope = number(transform, "RescaleSlope", None) if transform is not None else None
        intercept = number(transform, "RescaleIntercept", None) if transform is not None else None
        frames.append(
            Frame(
                index=i,
                position=vector(position, "ImagePositionPatient", 3) if position is not None else None,  # type: ignore[arg-type]
                orientation=vector(orientation, "ImageOrientationPatient", 6)
                if orientation is not None
                else None,  # type: ignore[arg-type]
                pixel_spacing=vector(measures, "PixelSpacing", 2) if measures is not None else None,  # type: ignore[arg-type]
                slice_thickness=positive(number(measures, "SliceThickness", None))
                if measures is not None
                else None,
                rescale_slope=top_slope if slope is None else slope,
                rescale_intercept=top_intercept if intercept is None else intercept,
                frame_type=_frame_type(groups) or strings(ds, "ImageType"),
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
                return strings(element.value[0], "FrameType")
    return ()


def _normal(orientation: Sequence[float]) -> np.ndarray:
    n = np.cross(np.asarray(orientation[:3], dtype=np.float64), np.asarray(orientation[3:], dtype=np.float64))
    norm = np.linalg.norm(n)
    if norm < 1e-6:
        raise BadValue("ImageOrientationPatient", list(orientation))
    return n / norm

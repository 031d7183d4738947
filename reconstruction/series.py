"""Series: group instances into stackable 3D series, skip what cannot be a volume, and pick the best one.

Instances are grouped by SeriesInstanceUID (copies of one SOPInstanceUID are read once). Within a group,
slices that cannot be a volume are skipped with a reason (secondary and screen captures, color images,
localizers and other projection images, Siemens mosaics, slices without patient geometry). The rest is split
into stacks where the slices cannot share one grid (ImageOrientationPatient differing by more than 1e-4, or
another SOP class, matrix or pixel spacing), and where ImageType/FrameType (then EchoNumbers) differ while
positions repeat. A stack with a single position is skipped as a "single-slice series".

Series ids: an unsplit series keeps its SeriesInstanceUID as ``uid``; the parts of a split series are
``"<SeriesInstanceUID>.<n>"``, n = 1, 2, ... in a stable order (by orientation, matrix, image type, echo).
Files whose SeriesInstanceUID is empty group by their frame of reference (`anonymous_series_uid`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.uid import (
    BreastProjectionXRayImageStorageForPresentation,
    BreastProjectionXRayImageStorageForProcessing,
    ComputedRadiographyImageStorage,
    DigitalIntraOralXRayImageStorageForPresentation,
    DigitalIntraOralXRayImageStorageForProcessing,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    EnhancedXAImageStorage,
    EnhancedXRFImageStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameSingleBitSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    RTImageStorage,
    SecondaryCaptureImageStorage,
    XRayAngiographicImageStorage,
    XRayRadiofluoroscopicImageStorage,
)

from .deflate import DEFAULT_MAX_INFLATED_BYTES
from .errors import NoVolumeError
from .frames import Frame
from .instance import Instance, read_instances
from .progress import Progress
from .sources import Skipped, ZipLimits, expand_inputs

ORIENTATION_TOLERANCE = 1e-4
"""Largest difference between direction cosines of slices that share one stack."""

POSITION_TOLERANCE = 0.01
"""Slices closer than this along the stack normal (mm) are at the same position."""

SECONDARY_CAPTURE_CLASSES = {
    SecondaryCaptureImageStorage,
    MultiFrameSingleBitSecondaryCaptureImageStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
}
PROJECTION_CLASSES = {
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    DigitalIntraOralXRayImageStorageForPresentation,
    DigitalIntraOralXRayImageStorageForProcessing,
    XRayAngiographicImageStorage,
    EnhancedXAImageStorage,
    XRayRadiofluoroscopicImageStorage,
    EnhancedXRFImageStorage,
    RTImageStorage,
    BreastProjectionXRayImageStorageForPresentation,
    BreastProjectionXRayImageStorageForProcessing,
}
PROJECTION_MODALITIES = {"CR", "DX", "MG", "IO", "XA", "RF", "RG", "PX", "RTIMAGE"}


@dataclass(frozen=True)
class Slice:
    """One frame of one instance, as a slice of a series."""

    instance: Instance
    frame: Frame

    @property
    def path(self) -> str:
        return self.instance.path


@dataclass(frozen=True, eq=False)
class Series:
    """A stack of slices that can be assembled into one volume, in stack order (ascending along the normal).

    ``uid``: the id to ask for it by (see the module docstring). ``orientation``: the six direction cosines
    of ImageOrientationPatient. ``pixel_spacing``: (Δrow, Δcol) mm. ``slice_spacing``: the median distance
    between neighbouring slices along the normal, mm. ``slice_thickness``: the median SliceThickness, if
    given.
    """

    uid: str
    series_instance_uid: str
    modality: str
    description: str
    series_number: int | None
    slices: tuple[Slice, ...]
    rows: int
    columns: int
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]
    slice_thickness: float | None
    slice_spacing: float

    @property
    def instances(self) -> tuple[Instance, ...]:
        """The distinct instances, in stack order of their first slice."""
        return tuple({id(s.instance): s.instance for s in self.slices}.values())

    @property
    def instance_count(self) -> int:
        return len({id(s.instance) for s in self.slices})

    @property
    def slice_count(self) -> int:
        return len(self.slices)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """(slice spacing, Δrow, Δcol) in mm, as Volume.spacing_mm."""
        return (self.slice_spacing, self.pixel_spacing[0], self.pixel_spacing[1])

    @property
    def normal(self) -> np.ndarray:
        return stack_normal(self.orientation)

    @property
    def study_instance_uid(self) -> str:
        return self.slices[0].instance.study_instance_uid

    @property
    def study_description(self) -> str:
        return self.slices[0].instance.study_description

    @property
    def label(self) -> str:
        """How messages name the series: number and description, never its UID."""
        number = f" {self.series_number}" if self.series_number is not None else ""
        return f"series{number} {self.description!r}"


@dataclass(frozen=True, eq=False)
class Scan:
    """What the inputs hold: the 3D series (ordered by SeriesNumber) and everything skipped, with why."""

    series: list[Series]
    skipped: list[Skipped]


def find_series(
    inputs: Sequence[str | Path],
    progress: Progress | None = None,
    *,
    zip_limits: ZipLimits | Mapping[str, float] | None = None,
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
) -> Scan:
    """Expand the inputs, read every header (reporting "reading"), and group the instances into series.

    Requires every input to exist; raises InputError for an unreadable input or an unsafe zip (see ZipLimits),
    and its DecompressionBombError for a deflated DICOM dataset that inflates past ``max_inflated_bytes``
    (or past its ratio limit, see ``deflate``).
    """
    sources = expand_inputs(inputs, zip_limits=zip_limits)
    instances, unreadable = read_instances(sources.files, progress, max_inflated_bytes=max_inflated_bytes)
    series, skipped = group_series(instances)
    return Scan(series=series, skipped=[*sources.skipped, *unreadable, *skipped])


def pick_series(scan: Scan, uid: str | None = None) -> Series:
    """The series with id ``uid`` (a split's base SeriesInstanceUID also works if only one part is a series),
    or by default the best one by `series_preference`.

    Raises NoVolumeError when there is no series, or no series ``uid`` (listing the available ids).
    """
    if uid is not None:
        for series in scan.series:
            if series.uid == uid:
                return series
        parts = [s for s in scan.series if s.series_instance_uid == uid]
        if len(parts) == 1:
            return parts[0]
        available = ", ".join(s.uid for s in scan.series) or "none"
        raise NoVolumeError(uid, f"no such 3D series in the inputs (available: {available})")
    if not scan.series:
        raise NoVolumeError("inputs", f"no 3D series found{_skipped_summary(scan.skipped)}")
    return max(
        scan.series, key=lambda s: series_preference(s.modality, s.slice_count, s.slice_spacing, s.pixel_spacing)
    )


def series_preference(
    modality: str, slices: int, slice_spacing_mm: float, pixel_spacing_mm: tuple[float, float]
) -> tuple:
    """The sort key that picks the best series for a 3D model, larger is better: CT before other modalities,
    then more slices, then the finer slice spacing, then the finer pixel (smaller Δrow × Δcol)."""
    drow, dcol = pixel_spacing_mm
    return (modality.upper() == "CT", slices, -slice_spacing_mm, -(drow * dcol))


def group_series(instances: Iterable[Instance]) -> tuple[list[Series], list[Skipped]]:
    """Group instances into series (see the module docstring); everything left out is a Skipped."""
    by_uid: dict[str, list[Instance]] = {}
    skipped: list[Skipped] = []
    first_by_sop: dict[str, Instance] = {}
    for instance in instances:
        sop = instance.sop_instance_uid
        if sop and sop in first_by_sop:
            skipped.append(
                Skipped(instance.path, f"duplicate SOP Instance UID (same as {first_by_sop[sop].path})")
            )
            continue
        if sop:
            first_by_sop[sop] = instance
        uid = instance.series_instance_uid or anonymous_series_uid(instance)
        if not uid:
            skipped.append(Skipped(instance.path, "no Series Instance UID"))
            continue
        by_uid.setdefault(uid, []).append(instance)
    series: list[Series] = []
    for uid, members in by_uid.items():
        found, left_out = _split_series(uid, members)
        series.extend(found)
        skipped.extend(left_out)
    series.sort(key=lambda s: (s.series_number is None, s.series_number or 0, s.description, s.uid))
    return series, skipped


def anonymous_series_uid(instance: Instance) -> str:
    """The id of a series whose files carry no SeriesInstanceUID (some exports empty every UID): its frame of
    reference's, "for.<FrameOfReferenceUID>", so that such files still group; "" without one either."""
    return f"for.{instance.frame_of_reference_uid}" if instance.frame_of_reference_uid else ""


def stack_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal ``row direction × column direction`` of an ImageOrientationPatient."""
    n = np.cross(
        np.asarray(orientation[:3], dtype=np.float64), np.asarray(orientation[3:6], dtype=np.float64)
    )
    return n / np.linalg.norm(n)


def unfit_reason(instance: Instance, frame: Frame) -> str | None:
    """Why this slice cannot be part of a 3D volume, or None if it can."""
    types = set(instance.image_type) | set(frame.frame_type)
    if instance.sop_class_uid in SECONDARY_CAPTURE_CLASSES:
        return "secondary capture"
    if types & {"SCREEN SAVE", "SCREENSHOT"}:
        return "screen capture"
    if instance.samples_per_pixel != 1 or not instance.photometric_interpretation.startswith("MONOCHROME"):
        return f"color image ({instance.photometric_interpretation or 'no PhotometricInterpretation'})"
    if "LOCALIZER" in types:
        return "localizer (scout)"
    if (
        "PROJECTION IMAGE" in types
        or instance.sop_class_uid in PROJECTION_CLASSES
        or instance.modality in PROJECTION_MODALITIES
    ):
        return f"projection image ({instance.modality or 'no Modality'})"
    if "MOSAIC" in types:
        return "Siemens mosaic (slices tiled in one image)"
    if instance.bits_allocated not in (8, 16, 32):
        return f"BitsAllocated {instance.bits_allocated} is not supported"
    missing = [
        keyword
        for keyword, value in (
            ("ImagePositionPatient", frame.position),
            ("ImageOrientationPatient", frame.orientation),
            ("PixelSpacing", frame.pixel_spacing),
        )
        if value is None
    ]
    if missing:
        return f"no patient geometry ({', '.join(missing)} missing)"
    if not _orthonormal(frame.orientation):  # type: ignore[arg-type]
        return "invalid ImageOrientationPatient (not two orthogonal unit vectors)"
    return None


def _orthonormal(orientation: Sequence[float]) -> bool:
    row = np.asarray(orientation[:3], dtype=np.float64)
    column = np.asarray(orientation[3:6], dtype=np.float64)
    tolerance = 1e-2
    return bool(
        abs(np.linalg.norm(row) - 1) < tolerance
        and abs(np.linalg.norm(column) - 1) < tolerance
        and abs(row @ column) < tolerance
    )


def _split_series(uid: str, members: list[Instance]) -> tuple[list[Series], list[Skipped]]:
    rejected: dict[str, dict[int, Instance]] = {}
    slices: list[Slice] = []
    for instance in members:
        for frame in instance.frames:
            reason = unfit_reason(instance, frame)
            if reason is None:
                slices.append(Slice(instance, frame))
            else:
                rejected.setdefault(reason, {})[id(instance)] = instance
    stacks = [part for stack in _stacks(slices) for part in _split_repeats(stack)]
    stacks.sort(key=_stack_order)
    series = []
    for n, stack in enumerate(stacks, 1):
        if _distinct_positions(stack) < 2:
            reason = (
                "single-slice series" if len(stack) == 1 else "single-slice series (images at one position)"
            )
            rejected.setdefault(reason, {}).update((id(s.instance), s.instance) for s in stack)
        else:
            series.append(series_from_slices(f"{uid}.{n}" if len(stacks) > 1 else uid, stack, uid))
    skipped = [_skipped(reason, list(group.values())) for reason, group in rejected.items()]
    return series, skipped


def _stacks(slices: list[Slice]) -> list[list[Slice]]:
    """Partition slices into groups that share SOP class, matrix, pixel spacing and orientation (± 1e-4)."""
    groups: list[tuple[tuple, np.ndarray, np.ndarray, list[Slice]]] = []
    for s in slices:
        key = (s.instance.sop_class_uid, s.instance.rows, s.instance.columns)
        orientation = np.asarray(s.frame.orientation, dtype=np.float64)
        spacing = np.asarray(s.frame.pixel_spacing, dtype=np.float64)
        for group_key, group_orientation, group_spacing, members in groups:
            if (
                group_key == key
                and np.max(np.abs(group_orientation - orientation)) <= ORIENTATION_TOLERANCE
                and np.max(np.abs(group_spacing - spacing)) <= 1e-4 * max(1.0, float(np.max(spacing)))
            ):
                members.append(s)
                break
        else:
            groups.append((key, orientation, spacing, [s]))
    return [members for *_, members in groups]


def _split_repeats(stack: list[Slice]) -> list[list[Slice]]:
    """Where positions repeat, split by FrameType/ImageType, then by EchoNumbers (if they differ)."""
    if not _has_repeated_positions(stack):
        return [stack]
    for attribute in (lambda s: s.frame.frame_type, lambda s: s.instance.echo_numbers):
        values: dict[object, list[Slice]] = {}
        for s in stack:
            values.setdefault(attribute(s), []).append(s)
        if len(values) > 1:
            return [part for members in values.values() for part in _split_repeats(members)]
    return [stack]


def _distinct_positions(stack: list[Slice]) -> int:
    distances = np.sort(_distances(stack))
    return 1 + int(np.count_nonzero(np.diff(distances) >= POSITION_TOLERANCE))


def _has_repeated_positions(stack: list[Slice]) -> bool:
    distances = np.sort(_distances(stack))
    return bool(np.any(np.diff(distances) < POSITION_TOLERANCE))


def _distances(slices: Sequence[Slice]) -> np.ndarray:
    """Each slice's position along the stack normal (of the first slice's orientation), mm."""
    normal = stack_normal(slices[0].frame.orientation)  # type: ignore[arg-type]
    positions = np.asarray([s.frame.position for s in slices], dtype=np.float64)
    return positions @ normal


def _stack_order(stack: list[Slice]) -> tuple:
    first = stack[0]
    orientation = tuple(round(v, 4) + 0.0 for v in first.frame.orientation)  # type: ignore[union-attr]
    return (
        orientation,
        first.instance.rows,
        first.instance.columns,
        first.frame.frame_type,
        first.instance.echo_numbers,
        float(np.min(_distances(stack))),
    )


def series_from_slices(uid: str, stack: Sequence[Slice], series_instance_uid: str | None = None) -> Series:
    """A Series of exactly these slices, sorted along the first slice's normal (no checks: assembly checks).

    Requires at least one slice with position, orientation and pixel spacing.
    """
    distances = _distances(stack)
    order = sorted(range(len(stack)), key=lambda k: (distances[k], stack[k].path, stack[k].frame.index))
    ordered = tuple(stack[k] for k in order)
    steps = np.diff(distances[order])
    steps = steps[steps >= POSITION_TOLERANCE]
    thicknesses = [s.frame.slice_thickness for s in ordered if s.frame.slice_thickness is not None]
    first = ordered[0]
    return Series(
        uid=uid,
        series_instance_uid=series_instance_uid or uid,
        modality=first.instance.modality,
        description=first.instance.series_description,
        series_number=first.instance.series_number,
        slices=ordered,
        rows=first.instance.rows,
        columns=first.instance.columns,
        orientation=first.frame.orientation,  # type: ignore[arg-type]
        pixel_spacing=first.frame.pixel_spacing,  # type: ignore[arg-type]
        slice_thickness=float(np.median(thicknesses)) if thicknesses else None,
        slice_spacing=float(np.median(steps)) if len(steps) else 0.0,
    )


def _skipped(reason: str, instances: list[Instance]) -> Skipped:
    """One entry for every file of a series left out for the same reason."""
    paths = [i.path for i in instances]
    if len(paths) == 1:
        return Skipped(paths[0], reason)
    try:
        where = os.path.commonpath(paths)
    except ValueError:  # relative and absolute paths mixed
        where = paths[0]
    return Skipped(where or paths[0], f"{reason} ({len(paths)} files)")


def _skipped_summary(skipped: list[Skipped]) -> str:
    if not skipped:
        return ""
    reasons = Counter(s.reason.split(" (")[0] for s in skipped)
    top = ", ".join(f"{reason} ({count})" for reason, count in reasons.most_common(4))
    return f"; skipped: {top}"

"""Volume assembly: one Series -> a Volume with exact geometry (LPS mm), its slices decoded in parallel.

Slices are ordered by their distance along the stack normal, dot(IPP, row direction × column direction),
never by file name or InstanceNumber, and each keeps its true ImagePositionPatient: gantry tilt (a sheared
stack) and uneven spacing stay exact, without resampling. The checks, in order:

- one orientation (± 1e-4), matrix and pixel spacing for all slices, else InconsistentSeriesError;
- no gap between neighbours wider than 1.5 × their SliceThickness (1.5 × the median spacing when there is
  no thickness), else NonContiguousSeriesError, unless ``allow_gaps`` (then a warning);
- slices at one position must hold identical pixels (one is kept, with a warning), else
  InconsistentSeriesError.

Messages name the series by number and description, never by UID, and warnings carry no file paths: they
travel with the volume to clients.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import numpy as np

from .errors import InconsistentSeriesError, NonContiguousSeriesError, VolumeTooLargeError
from .instance import Instance
from .pixels import DEFAULT_MAX_VOXELS, check_declared_size, decode_stored, output_dtype, rescale
from .progress import Progress, no_progress
from .series import ORIENTATION_TOLERANCE, POSITION_TOLERANCE, Series, Slice, stack_normal
from .sources import Archives
from .volume import Volume

DECODE_WORKERS = 2
"""Threads decoding slices: reading and most decoders release the GIL."""

GAP_FACTOR = 1.5
"""A spacing wider than this many slice thicknesses (or median spacings) is a gap."""

UNEVEN_TOLERANCE = 0.02
"""Spacings that differ by less than this (mm) plus 1% are even: positions are often written to 0.01 mm."""


def assemble_volume(
    series: Series,
    *,
    allow_gaps: bool = False,
    progress: Progress | None = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
) -> Volume:
    """Decode and stack ``series`` into a Volume; report ("decoding", i, n) per slice.

    Requires at least one slice. Raises InconsistentSeriesError, NonContiguousSeriesError (unless
    ``allow_gaps``), and the decoding errors (PixelDataError, UnsupportedTransferSyntaxError). Before anything
    is allocated, an instance whose header declares more than ``max_voxels`` voxels or more pixel data than
    it holds is a PixelDataError naming its file, and a series of more than ``max_voxels`` voxels a
    VolumeTooLargeError.
    """
    progress = progress or no_progress
    if not series.slices:
        raise InconsistentSeriesError(series.label, "has no slices")
    _check_one_grid(series)
    normal = stack_normal(series.orientation)
    positions = np.asarray([s.frame.position for s in series.slices], dtype=np.float64)
    distances = positions @ normal
    order = sorted(
        range(len(series.slices)),
        key=lambda k: (distances[k], series.slices[k].path, series.slices[k].frame.index),
    )
    slices = [series.slices[k] for k in order]
    positions, distances = positions[order], distances[order]
    groups = _position_groups(series, positions, distances)
    firsts = [g[0] for g in groups]
    gaps = _gap_check(series, slices, distances, firsts, allow_gaps)
    warnings = list(gaps)

    _check_declared_sizes(series, len(slices), max_voxels)
    dtype = output_dtype(series.modality, [(s.instance, s.frame) for s in slices])
    voxels = np.empty((len(slices), series.rows, series.columns), dtype=dtype)
    digests = _decode_into(voxels, slices, progress, max_voxels)

    dropped = _duplicates(series, voxels, groups, distances)
    if dropped:
        at = ", ".join(f"{distances[k]:.2f}" for k in dropped[:5]) + (", ..." if len(dropped) > 5 else "")
        warnings.append(
            f"{len(dropped)} duplicate slices (same position, identical pixels) dropped, "
            f"at {at} mm along the stack"
        )
        voxels, positions, distances = voxels[firsts], positions[firsts], distances[firsts]
        slices = [slices[k] for k in firsts]
        digests = [digests[k] for k in firsts]
    warnings += _uneven_spacing(distances, has_gaps=bool(gaps))

    row_direction = np.asarray(series.orientation[:3], dtype=np.float64)
    column_direction = np.asarray(series.orientation[3:], dtype=np.float64)
    pixel_spacing = (float(series.pixel_spacing[0]), float(series.pixel_spacing[1]))
    return Volume(
        voxels=voxels,
        positions=positions,
        row_direction=row_direction,
        column_direction=column_direction,
        pixel_spacing=pixel_spacing,
        modality=series.modality,
        units=slices[0].instance.units,
        slice_thickness=series.slice_thickness,
        description=series.description,
        series_uid=series.uid,
        pixel_hash=pixel_hash(voxels, positions, row_direction, column_direction, pixel_spacing, digests),
        warnings=tuple(warnings),
    )


def pixel_hash(
    voxels: np.ndarray,
    positions: np.ndarray,
    row_direction: np.ndarray,
    column_direction: np.ndarray,
    pixel_spacing: tuple[float, float],
    slice_digests: list[bytes] | None = None,
) -> str:
    """SHA-256 hex over the dtype, the shape, each slice's SHA-256 and the geometry: a cache key.

    ``slice_digests`` (SHA-256 of each C-contiguous slice, computed while decoding) saves hashing again.
    """
    if slice_digests is None:
        slice_digests = [slice_digest(voxels[k]) for k in range(voxels.shape[0])]
    h = hashlib.sha256(b"theatrum.volume.v1\0")
    h.update(f"{voxels.dtype.str}|{voxels.shape}".encode())
    for digest in slice_digests:
        h.update(digest)
    for array in (positions, row_direction, column_direction, np.asarray(pixel_spacing)):
        h.update(np.ascontiguousarray(array, dtype="<f8").tobytes())
    return h.hexdigest()


def slice_digest(voxels: np.ndarray) -> bytes:
    """SHA-256 of one slice's bytes (hashlib releases the GIL, so decoding threads do this in parallel)."""
    return hashlib.sha256(np.ascontiguousarray(voxels).data).digest()


def _check_declared_sizes(series: Series, slices: int, max_voxels: int) -> None:
    for instance in series.instances:
        check_declared_size(instance, max_voxels)
    voxels = slices * series.rows * series.columns
    if voxels > max_voxels:
        raise VolumeTooLargeError(
            series.label,
            f"{slices} slices of {series.rows} x {series.columns} are {voxels} voxels, "
            f"more than the limit of {max_voxels}",
        )


def _check_one_grid(series: Series) -> None:
    """Every slice must share the series' orientation, matrix and pixel spacing."""
    reference = np.asarray(series.orientation, dtype=np.float64)
    spacing = np.asarray(series.pixel_spacing, dtype=np.float64)
    for s in series.slices:
        if s.frame.position is None or s.frame.orientation is None or s.frame.pixel_spacing is None:
            raise InconsistentSeriesError(
                series.label, "a slice has no ImagePositionPatient, orientation or spacing"
            )
        orientation = np.asarray(s.frame.orientation, dtype=np.float64)
        if np.max(np.abs(orientation - reference)) > ORIENTATION_TOLERANCE:
            raise InconsistentSeriesError(
                series.label,
                f"mixed orientations: {_cosines(orientation)} and {_cosines(reference)} in one series",
            )
        if (s.instance.rows, s.instance.columns) != (series.rows, series.columns):
            raise InconsistentSeriesError(
                series.label,
                f"mixed matrix sizes: {s.instance.rows}x{s.instance.columns} "
                f"and {series.rows}x{series.columns}",
            )
        tolerance = 1e-4 * max(1.0, float(spacing.max()))
        if np.max(np.abs(np.asarray(s.frame.pixel_spacing) - spacing)) > tolerance:
            raise InconsistentSeriesError(
                series.label, f"mixed pixel spacings: {list(s.frame.pixel_spacing)} and {list(spacing)} mm"
            )


def _position_groups(series: Series, positions: np.ndarray, distances: np.ndarray) -> list[list[int]]:
    """Runs of sorted slices at the same distance along the normal; they must share the whole IPP."""
    groups: list[list[int]] = [[0]]
    for k in range(1, len(distances)):
        if distances[k] - distances[groups[-1][0]] < POSITION_TOLERANCE:
            if np.linalg.norm(positions[k] - positions[groups[-1][0]]) > POSITION_TOLERANCE:
                raise InconsistentSeriesError(
                    series.label,
                    f"two slices at {distances[k]:.2f} mm along the stack have different in-plane origins",
                )
            groups[-1].append(k)
        else:
            groups.append([k])
    return groups


def _gap_check(
    series: Series, slices: list[Slice], distances: np.ndarray, firsts: list[int], allow_gaps: bool
) -> list[str]:
    """The gap warnings (allow_gaps), or NonContiguousSeriesError for the first gap."""
    if len(firsts) < 2:
        return []
    steps = np.diff(distances[firsts])
    median = float(np.median(steps))
    found = []
    for n, step in enumerate(steps):
        a, b = slices[firsts[n]].frame.slice_thickness, slices[firsts[n + 1]].frame.slice_thickness
        if a is not None and b is not None:
            basis, what = max(a, b), f"slice thickness {max(a, b):.2f} mm"
        else:
            basis, what = median, f"median spacing {median:.2f} mm"
        limit = GAP_FACTOR * basis + 1e-3
        if step > limit:
            found.append(
                f"gap of {step:.2f} mm between slices {n} and {n + 1} (more than {GAP_FACTOR:g} × {what})"
            )
    if found and not allow_gaps:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise NonContiguousSeriesError(series.label, f"{found[0]}{more}; allow gaps to build it anyway")
    return [f"not contiguous: {g}" for g in found]


def _decode_into(voxels: np.ndarray, slices: list[Slice], progress: Progress, max_voxels: int) -> list[bytes]:
    """Decode each instance once (in a thread pool), rescale its frames into their stack slots, and return
    each slot's `slice_digest`."""
    slots: dict[int, tuple[Instance, list[tuple[int, Slice]]]] = {}
    for k, s in enumerate(slices):
        slots.setdefault(id(s.instance), (s.instance, []))[1].append((k, s))
    total = len(slices)
    digests: list[bytes] = [b""] * total
    progress("decoding", 0, total)

    def decode(instance: Instance, targets: list[tuple[int, Slice]]) -> int:
        stored = decode_stored(instance, archives, max_voxels=max_voxels)
        for k, s in targets:
            frame = s.frame
            rescale(
                stored[frame.index], frame.rescale_slope, frame.rescale_intercept, voxels.dtype, out=voxels[k]
            )
            digests[k] = slice_digest(voxels[k])
        return len(targets)

    done = 0
    with Archives() as archives, ThreadPoolExecutor(max_workers=DECODE_WORKERS) as pool:
        pending = {pool.submit(decode, instance, targets) for instance, targets in slots.values()}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in finished:
                if future.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise future.exception()  # type: ignore[misc]
                done += future.result()
            progress("decoding", done, total)
    return digests


def _duplicates(
    series: Series, voxels: np.ndarray, groups: list[list[int]], distances: np.ndarray
) -> list[int]:
    """The slices to drop: repeats of a position with identical pixels. Different pixels are an error."""
    dropped = []
    for group in groups:
        for k in group[1:]:
            if not np.array_equal(voxels[group[0]], voxels[k]):
                raise InconsistentSeriesError(
                    series.label,
                    f"two different images at the same position ({distances[k]:.2f} mm along the stack)",
                )
            dropped.append(k)
    return dropped


def _uneven_spacing(distances: np.ndarray, has_gaps: bool) -> list[str]:
    steps = np.diff(distances)
    if has_gaps or len(steps) < 2:
        return []
    low, high, median = float(steps.min()), float(steps.max()), float(np.median(steps))
    if high - low <= 0.01 * median + UNEVEN_TOLERANCE:
        return []
    return [f"uneven slice spacing, {low:.3f} to {high:.3f} mm (kept as is, not resampled)"]


def _cosines(orientation: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in orientation) + "]"

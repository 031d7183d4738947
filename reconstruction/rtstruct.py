"""RT Structure Sets (RTSTRUCT): one `Structure` per ROI, its contours rasterised slice by slice on the grid of
the series it outlines.

Each ROI is named by ROIName and coloured by ROIDisplayColor (the palette's colour when it has none); its
RTROIInterpretedType is kept as its code. Its CLOSED_PLANAR contours are in patient LPS millimetres: each lies on
the slice at its distance along the stack normal (within a tenth of the slice spacing), and is rasterised on
that slice's pixel grid, pixel centres in. All contours of one ROI on one slice are filled together by the
even-odd rule, so a contour inside another is a hole (and one inside that, an island). Points and open
contours outline no volume and are left out, with a warning. Empty items of a ContourImageSequence, as some
planning systems write them, are tolerated.
"""

from __future__ import annotations

import numpy as np

from .errors import ReconstructionError
from .segmentation import Segmentation, SegmentationError, SegmentationMismatchError
from .sources import FileRef
from .structures import Structure, StructureMask, palette_color
from .volume import Volume

PLANE_FRACTION = 0.1
"""How far (as a fraction of the local slice spacing) a contour may lie from its slice."""


def read_rtstruct(ref: FileRef) -> Segmentation:
    """The Segmentation of an RTSTRUCT file. Raises SegmentationError naming the file and the problem."""
    import pydicom

    source = str(ref)
    try:
        with ref.open() as stream:
            ds = pydicom.dcmread(stream)
        rois = {int(r.ROINumber): r for r in ds.StructureSetROISequence}
        contours = {int(c.ReferencedROINumber): c for c in ds.get("ROIContourSequence", [])}
        types = {int(o.ReferencedROINumber): str(o.get("RTROIInterpretedType", ""))
                 for o in ds.get("RTROIObservationsSequence", [])}
        structures, outlines, warnings = [], {}, []
        for n, (number, roi) in enumerate(sorted(rois.items())):
            item = contours.get(number)
            color = tuple(int(c) for c in item.ROIDisplayColor) if item is not None and "ROIDisplayColor" in item \
                else palette_color(n)
            code = {"interpreted_type": types[number]} if types.get(number) else {}
            structures.append(Structure(number, str(roi.get("ROIName", f"ROI {number}")), color, code))
            planar, left_out = [], 0
            for contour in (item.get("ContourSequence", []) if item is not None else []):
                points = np.asarray(contour.ContourData, dtype=np.float64).reshape(-1, 3)
                if contour.get("ContourGeometricType", "") == "CLOSED_PLANAR" and len(points) >= 3:
                    planar.append(points)
                else:
                    left_out += 1
            if left_out:
                warnings.append(f"ROI {number} {roi.get('ROIName', '')!r}: {left_out} point(s) or open contour(s) "
                                "outline no volume and were left out")
            outlines[number] = planar
        frames = {str(r.FrameOfReferenceUID) for r in ds.get("ReferencedFrameOfReferenceSequence", [])}
        frames |= {str(r.ReferencedFrameOfReferenceUID) for r in rois.values() if "ReferencedFrameOfReferenceUID" in r}
        series, instances = _references(ds)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise SegmentationError(source, f"not a readable RT Structure Set ({error})") from None
    except ReconstructionError:
        raise
    except Exception as error:  # pydicom on a damaged file
        raise SegmentationError(source, f"not a readable RT Structure Set ({type(error).__name__}: {error})") from None
    if len(frames) > 1:
        raise SegmentationError(source, "its ROIs lie in more than one frame of reference")

    def place(volume: Volume) -> list[StructureMask]:
        return [rasterise(s, outlines[s.number], volume, source) for s in structures]

    return Segmentation(
        format="RTSTRUCT", source=source, files=(ref,), structures=tuple(structures), place=place,
        frame_of_reference_uid=next(iter(frames), ""), study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        series_instance_uids=frozenset(series), referenced_instances=frozenset(instances),
        warnings=tuple(warnings))


def _references(ds) -> tuple[set[str], set[str]]:
    """The series and image instances the structure set references (empty items skipped)."""
    series, instances = set(), set()
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for item in study.get("RTReferencedSeriesSequence", []):
                series.add(str(item.SeriesInstanceUID))
                for image in item.get("ContourImageSequence", []):
                    if image.get("ReferencedSOPInstanceUID"):
                        instances.add(str(image.ReferencedSOPInstanceUID))
    return series, instances


def rasterise(structure: Structure, contours: list[np.ndarray], volume: Volume, source: str) -> StructureMask:
    """One ROI's contours (LPS mm) on the volume's grid, filled slice by slice by the even-odd rule."""
    if not contours:
        return StructureMask(structure, (0, 0, 0), np.zeros((0, 0, 0), dtype=bool))
    normal = volume.normal
    distances = volume.positions @ normal
    spacing = np.diff(distances)
    by_slice: dict[int, list[np.ndarray]] = {}
    for points in contours:
        along = points @ normal
        if np.ptp(along) > 0.01 + 1e-3 * np.ptp(points):
            raise SegmentationMismatchError(source, f"a contour of {structure.name!r} is not parallel to the slices")
        d = float(along.mean())
        k = int(np.argmin(np.abs(distances - d)))
        local = float(spacing[min(k, len(spacing) - 1)]) if len(spacing) else 1.0
        if abs(distances[k] - d) > PLANE_FRACTION * local:
            raise SegmentationMismatchError(
                source, f"a contour of {structure.name!r} lies {abs(distances[k] - d):.2f} mm from the nearest slice")
        delta = points - volume.positions[k]
        rows = delta @ volume.column_direction / volume.pixel_spacing[0]
        columns = delta @ volume.row_direction / volume.pixel_spacing[1]
        by_slice.setdefault(k, []).append(np.stack([rows, columns], axis=1))
    _, n_rows, n_columns = volume.shape
    filled = {k: even_odd(polygons, n_rows, n_columns) for k, polygons in by_slice.items()}
    filled = {k: box for k, box in filled.items() if box[2].any()}
    if not filled:
        return StructureMask(structure, (0, 0, 0), np.zeros((0, 0, 0), dtype=bool))
    k0, k1 = min(filled), max(filled) + 1
    r0 = min(b[0] for b in filled.values())
    c0 = min(b[1] for b in filled.values())
    r1 = max(b[0] + b[2].shape[0] for b in filled.values())
    c1 = max(b[1] + b[2].shape[1] for b in filled.values())
    mask = np.zeros((k1 - k0, r1 - r0, c1 - c0), dtype=bool)
    for k, (r, c, inside) in filled.items():
        mask[k - k0, r - r0: r - r0 + inside.shape[0], c - c0: c - c0 + inside.shape[1]] = inside
    return StructureMask(structure, (k0, r0, c0), mask)


def even_odd(polygons: list[np.ndarray], rows: int, columns: int) -> tuple[int, int, np.ndarray]:
    """The pixels whose centres lie inside ``polygons`` ((N, 2) arrays of (row, column) pixel coordinates)
    by the even-odd rule, clipped to a rows x columns image: (first row, first column, bool array of their
    bounding box). A centre exactly on a left edge is in, on a right edge out (half-open spans)."""
    edges = np.concatenate([np.stack([p, np.roll(p, -1, axis=0)], axis=1) for p in polygons])  # (E, 2, 2)
    (y0, x0), (y1, x1) = edges[:, 0].T, edges[:, 1].T
    every = np.concatenate(polygons)
    top = max(0, int(np.ceil(every[:, 0].min())))
    bottom = min(rows - 1, int(np.floor(every[:, 0].max())))
    left = max(0, int(np.ceil(every[:, 1].min())))
    right = min(columns - 1, int(np.floor(every[:, 1].max())))
    if bottom < top or right < left:
        return 0, 0, np.zeros((0, 0), dtype=bool)
    ys = np.arange(top, bottom + 1, dtype=np.float64)[:, None]  # (R, 1)
    crosses = ((y0[None, :] <= ys) & (ys < y1[None, :])) | ((y1[None, :] <= ys) & (ys < y0[None, :]))
    with np.errstate(divide="ignore", invalid="ignore"):
        x = x0[None, :] + (ys - y0[None, :]) * (x1 - x0)[None, :] / (y1 - y0)[None, :]
    x = np.where(crosses, x, np.inf)
    x.sort(axis=1)
    xs = np.arange(left, right + 1, dtype=np.float64)
    # A centre is inside when an odd number of crossings lie at or left of it.
    count = np.zeros((len(ys), len(xs)), dtype=np.int32)
    for column in range(int(crosses.sum(axis=1).max(initial=0))):
        count += x[:, column : column + 1] <= xs[None, :]
    return top, left, (count % 2).astype(bool)

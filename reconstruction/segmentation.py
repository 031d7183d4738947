"""Segmentations: files that name structures of a study (DICOM SEG, RTSTRUCT, NIfTI label maps), found among
the inputs and placed on the grid of the series they segment.

`find_segmentations(inputs)` reads every segmentation among the inputs (folders, zips, single files): DICOM
files of the SEG or RTSTRUCT storage classes (``dicom_seg``, ``rtstruct``) and NIfTI files (``nifti_labels``,
with their label tables). Each becomes a `Segmentation`: its structures, what it says about the images it
segments (frame of reference, study, series and instances, for DICOM), and `masks_on(volume)`, which places it
on a Volume's grid or raises `SegmentationMismatchError` saying why it does not fit there. Matching a
segmentation to a series (which series of a study it belongs to) is the caller's: `references_series`
compares the DICOM references, `masks_on` the geometry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ReconstructionError
from .sources import FileRef, ZipLimits, expand_inputs
from .structures import Structure, StructureMask
from .volume import Volume

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


class SegmentationError(ReconstructionError):
    """A segmentation file cannot be read (damaged, truncated, or not what it claims to be)."""


class SegmentationMismatchError(SegmentationError):
    """A segmentation does not lie on a series' grid (another frame of reference, shape or geometry)."""


@dataclass(frozen=True, eq=False)
class Segmentation:
    """One segmentation: ``format`` ("SEG", "RTSTRUCT", "NIfTI"), the file(s) it was read from (``files``, in
    the order they were read; ``source`` names them in messages), its structures, and the DICOM references
    (empty for NIfTI). ``place(volume)`` is the format's placement, `masks_on` its checked entry point."""

    format: str
    source: str
    files: tuple[FileRef, ...]
    structures: tuple[Structure, ...]
    place: Callable[[Volume], list[StructureMask]]
    frame_of_reference_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uids: frozenset[str] = frozenset()
    referenced_instances: frozenset[str] = frozenset()
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def masks_on(self, volume: Volume) -> list[StructureMask]:
        """Every structure's mask on ``volume``'s grid, in the order of ``structures``. Raises
        SegmentationMismatchError when the segmentation does not lie on that grid."""
        return self.place(volume)

    def references_series(self, frame_of_reference_uid: str, series_instance_uid: str,
                          sop_instance_uids: frozenset[str]) -> str | None:
        """None if this (DICOM) segmentation may segment the series with these identifiers, else why not: the
        frame of reference must be the same, and the instances it references (if it names any) must be the
        series' own. A NIfTI file references nothing: only its geometry decides."""
        if self.format == "NIfTI":
            return None
        if self.frame_of_reference_uid and self.frame_of_reference_uid != frame_of_reference_uid:
            return "another frame of reference"
        if self.referenced_instances and not self.referenced_instances <= sop_instance_uids:
            missing = len(self.referenced_instances - sop_instance_uids)
            return f"{missing} of the {len(self.referenced_instances)} images it references are not in the series"
        if not self.referenced_instances and self.series_instance_uids and \
                series_instance_uid not in self.series_instance_uids:
            return "it references another series"
        return None


def find_segmentations(
    inputs: Sequence[str | Path], *, zip_limits: ZipLimits | None = None
) -> list[Segmentation]:
    """Every segmentation among ``inputs`` (see the module docstring), in the order found. Raises
    SegmentationError for a segmentation file that cannot be read, InputError for an unreadable input."""
    from .dicom_seg import read_seg
    from .nifti_labels import find_label_maps, is_nifti
    from .rtstruct import read_rtstruct

    sources = expand_inputs(inputs, zip_limits=zip_limits)
    found: list[Segmentation] = []
    nifti: list[FileRef] = []
    others: list[FileRef] = []
    for ref in sources.files:
        kind = dicom_storage_class(ref)
        if kind == SEGMENTATION_STORAGE:
            found.append(read_seg(ref))
        elif kind == RT_STRUCTURE_SET_STORAGE:
            found.append(read_rtstruct(ref))
        elif is_nifti(ref):
            nifti.append(ref)
        elif kind is None:
            others.append(ref)
    found.extend(find_label_maps(nifti, others))
    return found


def dicom_storage_class(ref: FileRef) -> str | None:
    """The SOP Class UID of a DICOM file ("" when it has none), or None for a file that is not DICOM. A file
    without the DICM preamble is read as a bare dataset, and counts only if that yields a SOP Class UID."""
    import pydicom

    try:
        with ref.open() as stream:
            head = stream.read(132)
            stream.seek(0)
            preamble = len(head) == 132 and head[128:132] == b"DICM"
            ds = pydicom.dcmread(stream, stop_before_pixels=True, specific_tags=["SOPClassUID"], force=not preamble)
            uid = str(ds.get("SOPClassUID", ""))
    except Exception:  # whatever pydicom raises on bytes that are not DICOM
        return None
    return uid if preamble or uid else None

"""Typed errors of the reconstruction library.

Every error names the file (or series) it is about and the problem, so that the CLI and the server can
print one clear line and never a traceback.
"""

from __future__ import annotations


class ReconstructionError(Exception):
    """Base class. ``source`` names the file, folder or series the problem is about."""

    def __init__(self, source: str, problem: str):
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class InputError(ReconstructionError):
    """An input path cannot be read as DICOM (missing, not DICOM, truncated, unsafe zip)."""


class DecompressionBombError(InputError):
    """A compressed input expands past its limits (a deflated DICOM dataset): refused before it is inflated."""


class NoVolumeError(ReconstructionError):
    """No series in the input can be assembled into a 3D volume (or the requested one is absent)."""


class VolumeTooLargeError(NoVolumeError):
    """A series declares more voxels than the caller allows: refused before anything is allocated."""


class UnsupportedTransferSyntaxError(ReconstructionError):
    """The pixel data is encoded in a transfer syntax no installed decoder handles."""


class PixelDataError(ReconstructionError):
    """The pixel data is present but cannot be decoded (corrupt stream, truncated data, bad header)."""


class InconsistentSeriesError(ReconstructionError):
    """A series cannot be a volume: mixed orientations, or one position with two different images."""


class NonContiguousSeriesError(ReconstructionError):
    """A series has a gap between neighbouring slices (refused unless gaps are explicitly allowed)."""


class SurfaceError(ReconstructionError):
    """A surface cannot be extracted (e.g. the threshold is outside the data range)."""

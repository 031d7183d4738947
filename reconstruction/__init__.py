"""DICOM files -> series -> volume (HU, patient geometry) -> surfaces -> GLB.

A pure library: no web code, no I/O policy. See DESIGN.md for the data flow.
"""

__version__ = "0.2.0"

"""A synthetic CT head phantom, written as a real DICOM CT series (what `make run` and the benchmark use).

The anatomy is analytic: each structure is a signed distance function (SDF, mm, negative inside) in patient
LPS coordinates, painted over the structures before it with a partial-volume ramp as wide as the voxel and the
scanner's point spread. Boundaries are therefore smooth at any resolution, never blocky. Values are Hounsfield
units: air -1000, orbital and neck fat -90, CSF +8, white matter +27, grey matter +40, scalp +45,
contrast-filled arteries +250 and venous sinuses +200, cancellous bone +350..650, cortical bone +1100..1400,
enamel +2000, plus Gaussian noise. The patient is fictitious ("PHANTOM^HEAD").

Slices are rendered one at a time (the whole volume is never held in memory) and each file is written
atomically. A manifest (``phantom.json``) lists the parameters and files; it is rewritten last, so a folder
whose manifest is complete and matches the parameters is reused as it is.

Usage: ``python sample_data/phantom.py OUT_DIR [--shape 160 256 256] [--spacing 0.9375 0.9375]
[--slice-spacing 1.25] [--tilt DEG] [--noise 8] [--seed 0]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import PYDICOM_ROOT_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

PHANTOM_VERSION = 1  # bump whenever the anatomy or the headers change, so old folders are regenerated
MANIFEST = "phantom.json"
FIELD_OF_VIEW_MM = 240.0  # in-plane, when no pixel spacing is given
SCAN_LENGTH_MM = 200.0  # along the stack, when no slice spacing is given
PSF_MM = 0.7  # the scanner's blur, added to the voxel's own partial-volume width
RESCALE_INTERCEPT = -1024.0
STORED_MAX = 4095  # HU up to 3071, as a real CT

PATIENT = {
    "PatientName": "PHANTOM^HEAD",
    "PatientID": "THEATRUM-PHANTOM-0001",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
    "PatientComments": "Synthetic phantom written by theatrum sample_data/phantom.py; not a person.",
}

# Hounsfield units of the tissues.
AIR = -1000.0
FAT = -90.0
CSF = 8.0
VITREOUS = 12.0
WHITE_MATTER = 27.0
DEEP_GREY = 36.0
GREY_MATTER = 40.0
SCALP = 45.0
MUSCLE = 50.0
SCLERA = 45.0
LENS = 100.0
DISC = 80.0
CORD = 35.0
VEIN = 200.0
ARTERY = 250.0
CANCELLOUS = 350.0
DIPLOE = 650.0
SINUS_WALL = 900.0
FACIAL_CORTEX = 1100.0
INNER_TABLE = 1300.0
OUTER_TABLE = 1400.0
ENAMEL = 2000.0

# The cranium: an ellipsoid cut by the sloping skull base; tables and diploe are offsets inward.
CRANIUM_CENTER = (0.0, 8.0, 18.0)
CRANIUM_RADII = (70.0, 90.0, 76.0)
SKULL_BASE = (20.0, -12.0, -30.0)  # z (mm) of the anterior, middle and posterior cranial fossae floors
SKULL_LAYERS = ((0.0, OUTER_TABLE), (1.8, DIPLOE), (5.2, INNER_TABLE), (7.0, CSF))
SCALP_MM = 6.0


# ----------------------------------------------------------------------------------------------------
# Parameters and geometry


@dataclass(frozen=True)
class PhantomParameters:
    """What a phantom series is made from. Spacing left as None fits a 240 mm field and a 200 mm scan."""

    shape: tuple[int, int, int] = (160, 256, 256)  # (slices, rows, columns)
    pixel_spacing: tuple[float, float] | None = None  # (Δrow, Δcol) mm, as DICOM PixelSpacing
    slice_spacing: float | None = None  # mm between neighbouring slices along the stack normal
    slice_thickness: float | None = None  # mm; defaults to the slice spacing
    gantry_tilt: float = 0.0  # degrees, as DICOM GantryDetectorTilt (a sheared stack when not 0)
    noise_hu: float = 8.0  # standard deviation of the Gaussian noise
    seed: int = 0

    def resolved(self) -> PhantomParameters:
        """The same parameters with every default spacing filled in. Requires a shape of positive sizes."""
        slices, rows, columns = self.shape
        if min(self.shape) < 1:
            raise ValueError(f"shape must be positive, got {self.shape}")
        spacing = self.pixel_spacing or (FIELD_OF_VIEW_MM / max(rows, columns),) * 2
        step = self.slice_spacing or SCAN_LENGTH_MM / slices
        return replace(
            self,
            shape=(int(slices), int(rows), int(columns)),
            pixel_spacing=(float(spacing[0]), float(spacing[1])),
            slice_spacing=float(step),
            slice_thickness=float(self.slice_thickness or step),
            gantry_tilt=float(self.gantry_tilt),
            noise_hu=float(self.noise_hu),
            seed=int(self.seed),
        )

    def as_json(self) -> dict:
        """The resolved parameters as plain JSON values (what the manifest compares)."""
        return json.loads(json.dumps(asdict(self.resolved())))


@dataclass(frozen=True)
class SliceGeometry:
    """Image Plane values of a resolved phantom: one IPP per slice (ascending along the normal)."""

    positions: np.ndarray  # (slices, 3) ImagePositionPatient, LPS mm
    row_direction: np.ndarray  # first triplet of ImageOrientationPatient
    column_direction: np.ndarray  # second triplet
    pixel_spacing: tuple[float, float]


def slice_geometry(params: PhantomParameters) -> SliceGeometry:
    """The stack centred on the phantom: axial, or tilted about the L-R axis by GantryDetectorTilt."""
    p = params.resolved()
    slices, rows, columns = p.shape
    drow, dcol = p.pixel_spacing
    tilt = math.radians(p.gantry_tilt)
    row = np.array([1.0, 0.0, 0.0])
    column = np.array([0.0, math.cos(tilt), math.sin(tilt)])
    table_step = p.slice_spacing / math.cos(tilt)  # the table moves along z; slices are spaced on the normal
    centre_z = (np.arange(slices) - (slices - 1) / 2.0) * table_step
    positions = np.zeros((slices, 3))
    positions[:, 2] = centre_z
    positions -= (columns - 1) / 2.0 * dcol * row + (rows - 1) / 2.0 * drow * column
    return SliceGeometry(positions, row, column, (drow, dcol))


def partial_volume_width(params: PhantomParameters) -> float:
    """Width (mm) of the linear partial-volume ramp: the voxel's footprint and the scanner's blur combined."""
    p = params.resolved()
    drow, dcol = p.pixel_spacing
    return math.sqrt(PSF_MM**2 + (drow**2 + dcol**2 + p.slice_thickness**2) / 3.0)


# ----------------------------------------------------------------------------------------------------
# Shapes: signed distances evaluated on one slice's block as x (1, ni) and y, z (nj, 1), which broadcast.

Box = tuple[np.ndarray, np.ndarray]
INF = np.inf
# Ellipse distances are k0 (k0 - 1) / k1: first order in the distance, exact on the axes. _EPS turns the 0/0
# at the centre into -(smallest radius) without changing it elsewhere.
_EPS = 1e-6


def _box(lo: Sequence[float], hi: Sequence[float]) -> Box:
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid, optionally pitched about the L-R axis (degrees)."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    pitch: float = 0.0

    @property
    def bbox(self) -> Box:
        c, r = np.asarray(self.center), np.asarray(self.radii)
        reach = r.copy()
        if self.pitch:
            reach[1:] = r[1:].max()
        return _box(c - reach, c + reach)

    def sdf(self, x, y, z):
        cx, cy, cz = self.center
        rx, ry, rz = self.radii
        u, v, w = x - cx, y - cy, z - cz
        if self.pitch:
            a = math.radians(self.pitch)
            v, w = v * math.cos(a) + w * math.sin(a), -v * math.sin(a) + w * math.cos(a)
        yz0 = (v / ry) ** 2 + (w / rz) ** 2
        yz1 = (v / ry**2) ** 2 + (w / rz**2) ** 2
        k0 = np.sqrt((u / rx) ** 2 + yz0)
        k1 = np.sqrt((u / rx**2) ** 2 + yz1)
        return (k0 - 1.0) * (k0 + _EPS * min(self.radii)) / (k1 + _EPS)


@dataclass(frozen=True)
class Cylinder:
    """An elliptic cylinder along z between ``z_range``."""

    center: tuple[float, float]
    radii: tuple[float, float]
    z_range: tuple[float, float]

    @property
    def bbox(self) -> Box:
        (cx, cy), (rx, ry), (z0, z1) = self.center, self.radii, self.z_range
        return _box((cx - rx, cy - ry, z0), (cx + rx, cy + ry, z1))

    def sdf(self, x, y, z):
        (cx, cy), (rx, ry), (z0, z1) = self.center, self.radii, self.z_range
        u, v = x - cx, y - cy
        k0 = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
        k1 = np.sqrt((u / rx**2) ** 2 + (v / ry**2) ** 2)
        across = (k0 - 1.0) * (k0 + _EPS * min(rx, ry)) / (k1 + _EPS)
        return np.maximum(across, np.maximum(z0 - z, z - z1))


@dataclass(frozen=True)
class Tube:
    """A round tube of ``radius`` along a polyline (the union of its capsules)."""

    points: tuple[tuple[float, float, float], ...]
    radius: float

    @property
    def bbox(self) -> Box:
        p = np.asarray(self.points)
        return _box(p.min(axis=0) - self.radius, p.max(axis=0) + self.radius)

    def sdf(self, x, y, z):
        block_lo = np.array([x.min(), y.min(), z.min()])
        block_hi = np.array([x.max(), y.max(), z.max()])
        best = None
        for a, b in zip(self.points[:-1], self.points[1:], strict=True):
            a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            margin = self.radius + 8.0  # farther than any partial-volume ramp
            if np.any(np.minimum(a, b) - margin > block_hi) or np.any(np.maximum(a, b) + margin < block_lo):
                continue
            (ax, ay, az), (ux, uy, uz) = a.tolist(), (b - a).tolist()
            t = ((x - ax) * ux + ((y - ay) * uy + (z - az) * uz)) / (ux * ux + uy * uy + uz * uz)
            t = np.clip(t, 0.0, 1.0)
            d2 = (x - ax - t * ux) ** 2 + (y - ay - t * uy) ** 2 + (z - az - t * uz) ** 2
            best = d2 if best is None else np.minimum(best, d2)
        if best is None:
            return np.full(np.broadcast_shapes(x.shape, y.shape), INF, dtype=np.float32)
        return np.sqrt(best) - self.radius


@dataclass(frozen=True)
class HalfSpace:
    """The side of the plane ``dot(normal, p) = offset`` that the normal points away from."""

    normal: tuple[float, float, float]
    offset: float

    @property
    def bbox(self) -> Box:
        return _box((-INF,) * 3, (INF,) * 3)

    def sdf(self, x, y, z):
        norm = math.hypot(*self.normal)
        nx, ny, nz = (v / norm for v in self.normal)
        yz = y * ny + z * nz - self.offset / norm
        return yz + x * nx if nx else yz


@dataclass(frozen=True)
class Intersection:
    """The common part of ``shapes``, its creases rounded over ``k`` mm."""

    shapes: tuple
    k: float = 0.0

    @property
    def bbox(self) -> Box:
        boxes = [s.bbox for s in self.shapes]
        return _box(np.max([b[0] for b in boxes], axis=0), np.min([b[1] for b in boxes], axis=0))

    def sdf(self, x, y, z):
        d = self.shapes[0].sdf(x, y, z)
        for s in self.shapes[1:]:
            e = s.sdf(x, y, z)
            if self.k:
                h = np.maximum(self.k - np.abs(d - e), 0.0) / self.k
                d = np.maximum(d, e) + h * h * (self.k / 4.0)
            else:
                d = np.maximum(d, e)
        return d


@dataclass(frozen=True)
class Outside:
    """Everything but ``shape``."""

    shape: object

    @property
    def bbox(self) -> Box:
        return _box((-INF,) * 3, (INF,) * 3)

    def sdf(self, x, y, z):
        return -self.shape.sdf(x, y, z)


@dataclass(frozen=True)
class Union:
    """A smooth union (blend radius ``k`` mm), as soft tissue joins."""

    shapes: tuple
    k: float = 0.0

    @property
    def bbox(self) -> Box:
        boxes = [s.bbox for s in self.shapes]
        grow = self.k / 4.0  # the blend swells the union by up to k/4
        return _box(
            np.min([b[0] for b in boxes], axis=0) - grow, np.max([b[1] for b in boxes], axis=0) + grow
        )

    def sdf(self, x, y, z):
        d = self.shapes[0].sdf(x, y, z)
        for s in self.shapes[1:]:
            e = s.sdf(x, y, z)
            if self.k:
                h = np.maximum(self.k - np.abs(d - e), 0.0) / self.k
                d = np.minimum(d, e) - h * h * (self.k / 4.0)
            else:
                d = np.minimum(d, e)
        return d


@dataclass(frozen=True)
class Offset:
    """``shape`` grown by ``mm`` (shrunk when negative), plus optional folds ``amplitude * sin sin sin``."""

    shape: object
    mm: float
    amplitude: float = 0.0
    wavelengths: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def bbox(self) -> Box:
        lo, hi = self.shape.bbox
        grow = self.mm + self.amplitude
        return lo - grow, hi + grow

    def sdf(self, x, y, z):
        d = self.shape.sdf(x, y, z) - self.mm
        if self.amplitude:
            lx, ly, lz = self.wavelengths
            d = d + self.amplitude * np.sin(x / lx) * (np.sin(y / ly) * np.sin(z / lz))
        return d


@dataclass(frozen=True)
class Paint:
    """Fill ``shape`` with tissue: each (depth mm, HU) layer covers the part deeper than ``depth``."""

    name: str
    shape: object
    layers: tuple[tuple[float, float], ...]


# ----------------------------------------------------------------------------------------------------
# Anatomy


def _mirror(points: Sequence[tuple[float, float, float]], side: float) -> tuple:
    return tuple((side * x, y, z) for x, y, z in points)


def cranial_point(direction: tuple[float, float, float], depth: float) -> tuple[float, float, float]:
    """A point ``depth`` mm inside the cranium's outer surface, toward ``direction`` from its centre."""
    d = np.asarray(direction, dtype=np.float64)
    surface = d / np.linalg.norm(d / np.asarray(CRANIUM_RADII))  # on the ellipsoid, relative to its centre
    inward = surface / np.linalg.norm(surface) * depth
    return tuple(float(v) for v in np.asarray(CRANIUM_CENTER) + surface - inward)


def _cranial_floor() -> Union:
    """Above the skull base: the anterior, middle and posterior cranial fossae, from front to back."""
    a, m, p = SKULL_BASE
    return Union(
        (
            HalfSpace((0, 0, -1), -a),
            Intersection((HalfSpace((0, 0, -1), -m), HalfSpace((0, -1, 0), 28)), k=6.0),
            Intersection((HalfSpace((0, 0, -1), -p), HalfSpace((0, -1, 0), -12)), k=6.0),
        ),
        k=10.0,
    )


def _cranium() -> Intersection:
    return Intersection((Ellipsoid(CRANIUM_CENTER, CRANIUM_RADII), _cranial_floor()), k=4.0)


def _below_skull_base(margin: float) -> Offset:
    """Below the skull base's outer surface, plus ``margin`` mm up into it."""
    return Offset(Outside(_cranial_floor()), margin)


def _vessels() -> list[Paint]:
    arteries, veins = [], []
    for s in (1.0, -1.0):
        arteries += [
            Tube(_mirror(((20, -2, -160), (21, -2, -50), (17, 2, -25), (13, -1, -8)), s), 2.6),  # carotid
            Tube(_mirror(((11, 22, -160), (11, 22, -45), (5, 18, -30), (0, 14, -22)), s), 1.8),  # vertebral
            Tube(_mirror(((11, -1, -7), (30, 0, -2), (45, 8, 8), (50, 22, 26)), s), 1.5),  # middle cerebral
            Tube(_mirror(((4, -10, -6), (2.5, -38, 12), (2.5, -42, 40), (2.5, -18, 64)), s), 1.2),  # anterior
            Tube(_mirror(((6, 10, -6), (22, 25, -2), (26, 50, 6)), s), 1.3),  # posterior cerebral
        ]
        veins += [
            Tube(  # transverse and sigmoid sinus, then the internal jugular vein
                _mirror(
                    (
                        cranial_point((0, 1, -0.25), 13),
                        cranial_point((0.6, 1, -0.3), 13),
                        cranial_point((1, 0.7, -0.35), 13),
                        (44, 22, -36),
                        (30, 18, -55),
                        (30, 14, -160),
                    ),
                    s,
                ),
                4.0,
            )
        ]
    ring = tuple((11 * math.cos(t), -1 + 9 * math.sin(t), -7.0) for t in np.linspace(0, 2 * math.pi, 13))
    arteries += [Tube(((0, 14, -22), (0, 8, -7)), 1.7), Tube(ring, 1.3)]  # basilar, circle of Willis
    sagittal = tuple(
        cranial_point((0, math.cos(t), math.sin(t)), 12) for t in np.radians(range(-150, 10, 20))
    )
    veins += [Tube((*sagittal, cranial_point((0, 1, -0.25), 13)), 3.5)]
    return [Paint("artery", t, ((0.0, ARTERY),)) for t in arteries] + [
        Paint("venous sinus", t, ((0.0, VEIN),)) for t in veins
    ]


def anatomy() -> tuple[Paint, ...]:
    """The head, in painting order (each structure over the ones before it)."""
    cranium = _cranium()
    head = Union(
        (
            Offset(Ellipsoid(CRANIUM_CENTER, CRANIUM_RADII), SCALP_MM),
            Ellipsoid((0, -30, -38), (66, 62, 66)),  # face
            Ellipsoid((0, -62, -86), (22, 16, 14)),  # chin
            Ellipsoid((0, -90, -22), (10, 12, 24), pitch=-25),  # nose
            Ellipsoid((78, 14, -2), (4, 14, 28)),  # ears
            Ellipsoid((-78, 14, -2), (4, 14, 28)),
            Cylinder((0, 12), (55, 52), (-400, -30)),  # neck
        ),
        k=8.0,
    )
    neck_and_face = Intersection((head, HalfSpace((0, 0, 1), -40)))  # below z = -40
    face_bone = Intersection(
        (Ellipsoid((0, -52, -26), (44, 32, 38)), _below_skull_base(7.0), HalfSpace((0, 0, -1), 60))
    )
    orbits = [
        Intersection(
            (Ellipsoid((s * 30, -55, 4), (18, 24, 17)), _below_skull_base(0.0), HalfSpace((0, -1, 0), 76))
        )
        for s in (1, -1)
    ]
    paints = [
        Paint("scalp and skin", head, ((0.0, SCALP),)),
        Paint("neck", neck_and_face, ((2.5, FAT), (7.0, MUSCLE))),
        Paint(
            "vertebral bodies", Cylinder((0, 6), (15, 12), (-400, -44)), ((0.0, FACIAL_CORTEX), (1.8, 450.0))
        ),
        *[
            Paint("intervertebral disc", Cylinder((0, 6), (15.5, 12.5), (z - 2.0, z + 2.0)), ((0.0, DISC),))
            for z in (-50.0, -68.0, -86.0, -104.0, -122.0)
        ],
        Paint(
            "vertebral arches", Cylinder((0, 30), (19, 15), (-400, -44)), ((0.0, FACIAL_CORTEX), (2.0, 450.0))
        ),
        Paint("spinous processes", Tube(((0, 40, -60), (0, 54, -66)), 4.0), ((0.0, FACIAL_CORTEX),)),
        Paint("skull", cranium, SKULL_LAYERS),
        Paint("frontal sinus", Ellipsoid((0, -76, 32), (13, 2.5, 8)), ((0.0, INNER_TABLE), (1.0, AIR))),
        Paint("grey matter", Offset(cranium, -8.8, 1.4, (5.0, 6.0, 5.5)), ((0.0, GREY_MATTER),)),
        Paint("white matter", Offset(cranium, -19.0, 4.0, (9.0, 11.0, 8.0)), ((0.0, WHITE_MATTER),)),
        *[
            Paint("deep grey nuclei", Ellipsoid((s * 14, 4, 6), (8, 14, 9)), ((0.0, DEEP_GREY),))
            for s in (1, -1)
        ],
        *[
            Paint("lateral ventricle", Ellipsoid((s * 9, 4, 24), (6, 30, 8), pitch=-12), ((0.0, CSF),))
            for s in (1, -1)
        ],
        Paint("third ventricle", Ellipsoid((0, 6, 8), (2.5, 12, 8)), ((0.0, CSF),)),
        Paint("facial bones", face_bone, ((0.0, FACIAL_CORTEX), (2.0, CANCELLOUS))),
        *[
            Paint(
                "maxillary sinus",
                Ellipsoid((s * 21, -52, -30), (14, 16, 17)),
                ((0.0, SINUS_WALL), (1.2, AIR)),
            )
            for s in (1, -1)
        ],
        Paint("nasal cavity", Ellipsoid((0, -62, -28), (11, 30, 21)), ((0.0, SINUS_WALL), (1.2, AIR))),
        Paint(
            "airway", Tube(((0, -16, -160), (0, -16, -50), (0, -28, -36), (0, -45, -30)), 8.0), ((0.0, AIR),)
        ),
        *[
            Paint("ethmoid cells", Ellipsoid((s * 11, -60, 6), (6, 12, 8)), ((0.0, SINUS_WALL), (1.0, AIR)))
            for s in (1, -1)
        ],
        Paint("nasal septum", Ellipsoid((0, -64, -28), (1.0, 24, 17)), ((0.0, 600.0),)),
        *[Paint("orbit", o, ((0.0, FAT),)) for o in orbits],
        *[
            Paint(
                "zygoma",
                Tube(_mirror(((44, -60, 18), (48, -56, -10), (58, -30, -10), (62, -5, -12)), s), 3.5),
                ((0.0, FACIAL_CORTEX),),
            )
            for s in (1, -1)
        ],
        *[
            Paint("optic nerve", Tube(_mirror(((32, -55, 4), (12, -25, 10)), s), 2.2), ((0.0, CORD),))
            for s in (1, -1)
        ],
        *[
            Paint("eye", Ellipsoid((s * 32, -64, 4), (12, 12, 12)), ((0.0, SCLERA), (1.0, VITREOUS)))
            for s in (1, -1)
        ],
        *[Paint("lens", Ellipsoid((s * 32, -74.5, 4), (4.5, 2, 4.5)), ((0.0, LENS),)) for s in (1, -1)],
        Paint(
            "mandible",
            Tube(
                (
                    *_mirror(((46, 8, -12), (48, 10, -50), (40, -20, -72), (24, -52, -82)), 1.0),
                    (0, -62, -84),
                    *_mirror(((24, -52, -82), (40, -20, -72), (48, 10, -50), (46, 8, -12)), -1.0),
                ),
                6.5,
            ),
            ((0.0, FACIAL_CORTEX), (2.2, 400.0)),
        ),
        Paint("upper teeth", _dental_arch(-62.0), ((0.0, ENAMEL),)),
        Paint("lower teeth", _dental_arch(-72.0), ((0.0, ENAMEL),)),
        *_vessels(),
        Paint("spinal canal", Cylinder((0, 28), (10, 11), (-400, -26)), ((0.0, CSF), (2.0, CORD))),
    ]
    return tuple(paints)


def _dental_arch(z: float) -> Tube:
    half = ((30, -40, z), (27, -58, z), (18, -70, z))
    return Tube((*half, (0, -75, z), *_mirror(half[::-1], -1.0)), 4.0)


# Points well inside one tissue, with the HU expected there (before noise), for tests and sanity checks.
LANDMARKS: dict[str, tuple[tuple[float, float, float], float]] = {
    "air": ((0.0, -110.0, 60.0), AIR),
    "scalp": ((CRANIUM_RADII[0] + 3.0, CRANIUM_CENTER[1], CRANIUM_CENTER[2]), SCALP),
    "outer table": ((CRANIUM_RADII[0] - 0.9, CRANIUM_CENTER[1], CRANIUM_CENTER[2]), OUTER_TABLE),
    "diploe": ((CRANIUM_RADII[0] - 3.5, CRANIUM_CENTER[1], CRANIUM_CENTER[2]), DIPLOE),
    "inner table": ((CRANIUM_RADII[0] - 6.1, CRANIUM_CENTER[1], CRANIUM_CENTER[2]), INNER_TABLE),
    "white matter": ((35.0, 30.0, 40.0), WHITE_MATTER),
    "lateral ventricle": ((9.0, 4.0, 24.0), CSF),
    "vitreous": ((32.0, -64.0, 4.0), VITREOUS),
    "orbital fat": ((42.0, -46.0, 4.0), FAT),
    "maxillary sinus": ((21.0, -52.0, -30.0), AIR),
    "carotid artery": ((20.5, -2.0, -90.0), ARTERY),
    "vertebral body": ((0.0, 6.0, -77.0), 450.0),
    "tooth": ((0.0, -75.0, -62.0), ENAMEL),
}


# ----------------------------------------------------------------------------------------------------
# Rendering


def _index_range(origin: float, step: float, lo: float, hi: float, n: int) -> tuple[int, int]:
    """Indices i in [0, n) with lo <= origin + i * step <= hi (as a half-open range)."""
    if step == 0.0:
        return (0, n) if lo <= origin <= hi else (0, 0)
    a, b = (lo - origin) / step, (hi - origin) / step
    a, b = min(a, b), max(a, b)
    first = 0 if a == -INF else max(0, math.ceil(a))
    last = n if b == INF else min(n, math.floor(b) + 1)
    return first, max(first, last)


def _paint(values: np.ndarray, paint: Paint, x, y, z, width: float) -> None:
    """Paint one structure over ``values`` (which x, y, z broadcast to), in place."""
    distance = paint.shape.sdf(x, y, z)
    for depth, hu in paint.layers:
        fraction = np.clip(0.5 - (distance + depth) / width, 0.0, 1.0)
        values += (hu - values) * fraction


def render_slice(params: PhantomParameters, k: int, paints: Sequence[Paint] | None = None) -> np.ndarray:
    """The noiseless HU image (rows, columns) float32 of slice ``k``. Requires 0 <= k < slices."""
    p = params.resolved()
    geometry = slice_geometry(p)
    _, rows, columns = p.shape
    drow, dcol = p.pixel_spacing
    ipp = geometry.positions[k]
    col_step = geometry.column_direction * drow
    image = np.full((rows, columns), AIR, dtype=np.float32)
    width = partial_volume_width(p)
    for paint in paints or anatomy():
        lo, hi = paint.shape.bbox
        lo, hi = lo - width, hi + width  # where the partial-volume ramp can still reach
        i0, i1 = _index_range(ipp[0], dcol, lo[0], hi[0], columns)
        jy = _index_range(ipp[1], col_step[1], lo[1], hi[1], rows)
        jz = _index_range(ipp[2], col_step[2], lo[2], hi[2], rows)
        j0, j1 = max(jy[0], jz[0]), min(jy[1], jz[1])
        if i1 <= i0 or j1 <= j0:
            continue
        x = (ipp[0] + np.arange(i0, i1) * dcol).astype(np.float32)[None, :]
        j = np.arange(j0, j1)[:, None]
        y = (ipp[1] + j * col_step[1]).astype(np.float32)
        z = (ipp[2] + j * col_step[2]).astype(np.float32)
        _paint(image[j0:j1, i0:i1], paint, x, y, z, width)
    return image


def label_map(params: PhantomParameters, structures: Sequence[str]) -> np.ndarray:
    """The phantom's parts as a label map on its series' grid, (slices, rows, columns) uint8: voxel value n
    (1-based) where the centre lies inside a part named ``structures[n - 1]`` (every paint of that name, e.g.
    both eyes), painted in the anatomy's order; 0 elsewhere. Requires names the anatomy has."""
    p = params.resolved()
    known = {paint.name for paint in anatomy()}
    missing = [name for name in structures if name not in known]
    if missing:
        raise ValueError(f"the phantom has no part named {missing}")
    geometry = slice_geometry(p)
    _, rows, columns = p.shape
    drow, dcol = p.pixel_spacing
    labels = np.zeros(p.shape, dtype=np.uint8)
    x = (geometry.positions[0, 0] + np.arange(columns) * dcol)[None, None, :]
    row_offset = np.arange(rows)[None, :, None] * drow
    y = geometry.positions[:, 1][:, None, None] + row_offset * geometry.column_direction[1]
    z = geometry.positions[:, 2][:, None, None] + row_offset * geometry.column_direction[2]
    for paint in anatomy():
        if paint.name not in structures:
            continue
        inside = paint.shape.sdf(x, y, z) <= 0
        labels[np.broadcast_to(inside, p.shape)] = structures.index(paint.name) + 1
    return labels


def hu_at(points: np.ndarray, params: PhantomParameters | None = None) -> np.ndarray:
    """The noiseless HU (N,) at LPS points (N, 3) mm, blurred as a series made with ``params`` is."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    width = partial_volume_width(params or PhantomParameters())
    values = np.full((len(pts), 1), AIR, dtype=np.float32)
    for paint in anatomy():
        lo, hi = paint.shape.bbox
        near = np.flatnonzero(np.all((pts >= lo - width) & (pts <= hi + width), axis=1))  # as render_slice
        if len(near):
            block, p = values[near], pts[near]
            _paint(block, paint, p[:, 0:1], p[:, 1:2], p[:, 2:3], width)
            values[near] = block
    return values[:, 0]


def stored_slice(
    params: PhantomParameters, k: int, rng: np.random.Generator, paints: Sequence[Paint]
) -> np.ndarray:
    """Slice ``k`` as stored pixel values (int16, HU + 1024, within 12 bits), with noise from ``rng``."""
    p = params.resolved()
    image = render_slice(p, k, paints)
    if p.noise_hu:
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(p.noise_hu)
    stored = np.rint(image - np.float32(RESCALE_INTERCEPT))
    return np.clip(stored, 0, STORED_MAX).astype("<i2")


# ----------------------------------------------------------------------------------------------------
# DICOM


def _uid(params: PhantomParameters, *what: str) -> str:
    key = json.dumps(params.as_json(), sort_keys=True)
    return generate_uid(PYDICOM_ROOT_UID, ["theatrum-phantom", str(PHANTOM_VERSION), key, *what])


def _ds(value: float) -> str:
    """A DS string of at most 16 characters."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if len(text) <= 16 else f"{value:.8g}"


def _header(params: PhantomParameters) -> Dataset:
    """What all slices share: Patient, General Study/Series/Equipment, Frame of Reference, CT Image."""
    p = params.resolved()
    _, rows, columns = p.shape
    geometry = slice_geometry(p)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240102"
    ds.StudyTime = ds.SeriesTime = "093000"
    ds.AccessionNumber = "PHANTOM-ACC-0001"
    ds.Modality = "CT"
    ds.Manufacturer = "Theatrum"
    ds.InstitutionName = "Theatrum Phantom Institute"
    ds.ReferringPhysicianName = "DOCTOR^FICTITIOUS"
    ds.StationName = "PHANTOM"
    ds.StudyDescription = "CT HEAD PHANTOM"
    ds.SeriesDescription = "HEAD PHANTOM SYNTHETIC" + (f" TILT {_ds(p.gantry_tilt)}" if p.gantry_tilt else "")
    ds.ManufacturerModelName = "sample_data/phantom.py"
    for keyword, value in PATIENT.items():
        setattr(ds, keyword, value)
    ds.BodyPartExamined = "HEAD"
    ds.SliceThickness = _ds(p.slice_thickness)
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500"
    ds.SoftwareVersions = f"phantom {PHANTOM_VERSION}"
    ds.ReconstructionDiameter = _ds(max(rows * p.pixel_spacing[0], columns * p.pixel_spacing[1]))
    ds.GantryDetectorTilt = _ds(p.gantry_tilt)
    ds.TableHeight = "150"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "1000"
    ds.XRayTubeCurrent = "250"
    ds.Exposure = "250"
    ds.FilterType = "HEAD"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = _uid(p, "study")
    ds.SeriesInstanceUID = _uid(p, "series")
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = [_ds(v) for v in (*geometry.row_direction, *geometry.column_direction)]
    ds.FrameOfReferenceUID = _uid(p, "frame of reference")
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = [_ds(v) for v in p.pixel_spacing]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1  # signed int16; stored = HU + 1024, within 0..4095 as a real CT
    ds.WindowCenter = ["40", "500"]
    ds.WindowWidth = ["80", "2500"]
    ds.RescaleIntercept = _ds(RESCALE_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.BurnedInAnnotation = "NO"
    return ds


def _file_names(params: PhantomParameters) -> list[str]:
    """Extensionless names, shuffled so that neither their order nor InstanceNumber is the slice order."""
    p = params.resolved()
    slices = p.shape[0]
    order = np.random.default_rng([p.seed, 7]).permutation(slices)
    return [f"IM{10 * (int(n) + 1):05d}" for n in order]


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_manifest(out_dir: Path, params: PhantomParameters, files: dict[str, int], complete: bool) -> None:
    manifest = {
        "generator": "theatrum sample_data/phantom.py",
        "version": PHANTOM_VERSION,
        "parameters": params.as_json(),
        "complete": complete,
        "files": files,
    }
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    _write_atomically(out_dir / MANIFEST, lambda p: p.write_text(text))


def _read_manifest(out_dir: Path) -> dict | None:
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


# ----------------------------------------------------------------------------------------------------
# The series


@dataclass(frozen=True)
class PhantomSeries:
    """A phantom series on disk: its folder, files (in no particular order) and resolved parameters."""

    folder: Path
    files: tuple[Path, ...]
    params: PhantomParameters
    written: bool  # False when an identical complete series was already there


def existing_phantom(out_dir: Path, params: PhantomParameters) -> PhantomSeries | None:
    """The complete phantom series in ``out_dir`` made with ``params``, or None."""
    out_dir = Path(out_dir)
    manifest = _read_manifest(out_dir)
    if not manifest or not manifest.get("complete") or manifest.get("version") != PHANTOM_VERSION:
        return None
    if manifest.get("parameters") != params.as_json():
        return None
    files = manifest.get("files", {})
    for name, size in files.items():
        path = out_dir / name
        if not path.is_file() or path.stat().st_size != size:
            return None
    return PhantomSeries(out_dir, tuple(out_dir / n for n in files), params.resolved(), written=False)


def write_phantom(
    out_dir: Path | str,
    params: PhantomParameters | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PhantomSeries:
    """Write the phantom series into ``out_dir`` (created if needed), unless it is already there.

    Files from an earlier phantom in the same folder (listed by its manifest) are replaced; nothing else there
    is touched. ``progress(done, total)`` is called after each slice.
    """
    out_dir = Path(out_dir)
    p = (params or PhantomParameters()).resolved()
    found = existing_phantom(out_dir, p)
    if found:
        return found
    out_dir.mkdir(parents=True, exist_ok=True)
    names = _file_names(p)
    old = _read_manifest(out_dir)
    # List the new files before writing any, so that an interrupted run can always be cleaned up.
    _write_manifest(out_dir, p, dict.fromkeys(names, -1), complete=False)
    if old:
        for name in set(old.get("files", {})) - set(names):
            if "/" not in name and name not in (MANIFEST, "..", "."):
                (out_dir / name).unlink(missing_ok=True)

    slices = p.shape[0]
    geometry = slice_geometry(p)
    header = _header(p)
    paints = anatomy()
    rng = np.random.default_rng(p.seed)
    sizes: dict[str, int] = {}
    for k in range(slices):
        pixels = stored_slice(p, k, rng, paints)
        instance = slices - k  # numbered from the vertex down, as many head scans are
        name = names[k]
        ds = header
        ds.SOPInstanceUID = _uid(p, "instance", str(k))
        ds.InstanceNumber = instance
        ds.ImagePositionPatient = [_ds(v) for v in geometry.positions[k]]
        ds.SliceLocation = _ds(
            float(geometry.positions[k] @ np.cross(geometry.row_direction, geometry.column_direction))
        )
        ds.ContentTime = ds.AcquisitionTime = f"0930{k // 100 % 60:02d}.{k % 100:02d}0000"
        ds.PixelData = pixels.tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        _write_atomically(out_dir / name, lambda path, ds=ds: dcmwrite(path, ds, enforce_file_format=True))
        sizes[name] = (out_dir / name).stat().st_size
        if progress:
            progress(k + 1, slices)
    _write_manifest(out_dir, p, sizes, complete=True)
    return PhantomSeries(out_dir, tuple(out_dir / n for n in names), p, written=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic CT head phantom as a DICOM series.")
    parser.add_argument("out_dir", type=Path, help="folder to write into (reused if it already holds it)")
    parser.add_argument(
        "--shape", type=int, nargs=3, default=(160, 256, 256), metavar=("SLICES", "ROWS", "COLS")
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=2,
        metavar=("ROW_MM", "COL_MM"),
        help="PixelSpacing (default: a 240 mm field of view)",
    )
    parser.add_argument("--slice-spacing", type=float, help="mm between slices (default: a 200 mm scan)")
    parser.add_argument("--thickness", type=float, help="SliceThickness in mm (default: the slice spacing)")
    parser.add_argument("--tilt", type=float, default=0.0, help="GantryDetectorTilt in degrees (default 0)")
    parser.add_argument("--noise", type=float, default=8.0, help="Gaussian noise in HU (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    params = PhantomParameters(
        shape=tuple(args.shape),
        pixel_spacing=tuple(args.spacing) if args.spacing else None,
        slice_spacing=args.slice_spacing,
        slice_thickness=args.thickness,
        gantry_tilt=args.tilt,
        noise_hu=args.noise,
        seed=args.seed,
    )
    series = write_phantom(args.out_dir, params)
    state = "wrote" if series.written else "already had"
    print(f"{state} {len(series.files)} CT slices {series.params.shape} in {series.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

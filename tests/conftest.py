"""Shared test helpers: where the read-only shared data lives, and how tests that need it skip or fail.

Tests read ../shared by path (never copied into the repo). Without it they skip with a reason; when the
environment variable CI is set, a missing ../shared is a failure instead, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DICOM = SHARED / "dicom"
VECTORS = SHARED / "testvectors"
IN_CI = bool(os.environ.get("CI"))


def require_path(path: Path, what: str = "") -> Path:
    """Return ``path`` if it exists; otherwise skip the test (or fail it under CI)."""
    if path.exists():
        return path
    reason = f"{what or 'shared test data'} not found at {path}"
    if IN_CI:
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)")
    pytest.skip(reason)


def require_tool(path: str | Path, what: str) -> Path:
    """Like require_path, for an installed program that CI's .ci/run installs."""
    return require_path(Path(path), what)


# A test that uses one of these fixtures runs that external service; it gets the marker named here.
SERVICE_FIXTURES = {"orthanc": "pacs", "dicom_orthanc": "pacs", "anvil": "evm", "pg_url": "cluster",
                    "postgres_server": "cluster", "cluster": "cluster"}


def pytest_collection_modifyitems(config, items) -> None:
    """Mark what needs an external part, so the quick loop can leave it out: everything under tests/browser
    is `browser`; a test using the Orthanc fixture is `pacs`, one using anvil is `evm`, one using PostgreSQL,
    Redis or nginx is `cluster`."""
    browser = REPO / "tests" / "browser"
    for item in items:
        if browser in Path(item.fspath).parents:
            item.add_marker(pytest.mark.browser)
        for fixture, marker in SERVICE_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(getattr(pytest.mark, marker))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def bundle_session():
    """A recorded room checkpointed every 9 events, as export-bundle contents with the key that signed them
    (tests/bundles.py). Shared: never mutate it."""
    from bundles import make_bundle

    return make_bundle()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return require_path(SHARED, "../shared")


@pytest.fixture(scope="session")
def dicom_dir() -> Path:
    return require_path(DICOM, "../shared/dicom")


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    return require_path(VECTORS, "../shared/testvectors")


# -- synthetic DICOM series, written with pydicom ------------------------------------------------------------
SYNTHETIC_PATIENT = {
    "PatientName": "DOE^JANE",
    "PatientID": "PID-0042-SECRET",
    "PatientBirthDate": "19610203",
    "AccessionNumber": "ACC-777-SECRET",
    "InstitutionName": "Saint Nowhere Hospital",
}
"""Identifying values the synthetic series carry, so tests can check that none of them leaks."""


def write_ct_series(
    folder: Path,
    positions,
    pixels=None,
    *,
    orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    pixel_spacing=(0.5, 0.5),
    thickness: float | None = 1.0,
    description: str = "SYNTHETIC HEAD",
    series_uid: str | None = None,
    image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
    modality: str = "CT",
    names=None,
) -> list[Path]:
    """Write one single-frame CT file per position (uint16 stored, BitsStored 12, intercept -1024).

    ``pixels``: (n, rows, columns) stored values; by default 8x8 slices whose values encode the slice index.
    ``names``: file names (default IM0000.dcm, ...). Returns the paths in the order of ``positions``.
    """
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    positions = [tuple(float(v) for v in p) for p in positions]
    if pixels is None:
        base = np.arange(64, dtype=np.uint16).reshape(8, 8)
        pixels = np.stack([base + 100 * (k + 1) for k in range(len(positions))])
    pixels = np.asarray(pixels, dtype=np.uint16)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    paths = []
    for k, position in enumerate(positions):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for keyword, value in SYNTHETIC_PATIENT.items():
            setattr(ds, keyword, value)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.Modality = modality
        ds.SeriesDescription = description
        ds.SeriesNumber = 7
        ds.InstanceNumber = k + 1
        ds.ImageType = list(image_type)
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
        ds.PixelSpacing = [f"{v:.6f}" for v in pixel_spacing]
        if thickness is not None:
            ds.SliceThickness = f"{thickness:.6f}"
        ds.Rows, ds.Columns = int(pixels.shape[1]), int(pixels.shape[2])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
        ds.PixelData = np.ascontiguousarray(pixels[k]).astype("<u2").tobytes()
        path = folder / (names[k] if names else f"IM{k:04d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture
def write_series(tmp_path: Path):
    """``write_series(positions, pixels=None, folder="series", **options)``: see `write_ct_series`."""

    def write(positions, pixels=None, folder: str = "series", **options) -> list[Path]:
        return write_ct_series(tmp_path / folder, positions, pixels, **options)

    return write


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory) -> Iterator[str]:
    """One private PostgreSQL for the session (tests/engines.py); yields the URL of its `theatrum` database."""
    from engines import postgres

    with postgres(tmp_path_factory.mktemp("postgres")) as url:
        yield url


@pytest.fixture
def pg_url(postgres_server: str) -> str:
    """A new, empty PostgreSQL database of the session's server, for one test."""
    import secrets

    import psycopg

    name = "t" + secrets.token_hex(6)
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_server.rsplit("/", 1)[0] + "/" + name


def write_uneven_philips(folder: Path) -> Path:
    """The Philips phantom's regular series (real data) with its middle slice moved 0.4 mm along the stack, into
    `folder`: the volume keeps the true positions and warns of uneven spacing. Returns the folder."""
    import pydicom

    regular = require_path(DICOM / "ct-head-phantom-philips" / "DICOM" / "S21570" / "S2010", "the Philips phantom")
    files = sorted(p for p in regular.iterdir() if p.name != "DIRFILE")
    folder.mkdir(parents=True, exist_ok=True)
    for n, path in enumerate(files):
        ds = pydicom.dcmread(path)
        if n == len(files) // 2:
            ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 0.4]
        ds.save_as(folder / path.name)
    return folder


"""A real Orthanc PACS (Debian's `orthanc` + `orthanc-dicomweb`) for tests, holding the Philips phantom.

``run_orthanc(folder)`` starts ``/usr/sbin/Orthanc`` with a private config in ``folder`` (its own storage and
index, free ports, DICOMweb at ``/dicom-web/``, no authentication, loopback clients only), waits until it
answers ``GET /system`` and stops it with SIGTERM on exit. The session fixture ``orthanc`` also stores
every image file of ``../shared/dicom/ct-head-phantom-philips/DICOM`` through Orthanc's REST API
(``POST /instances``).

Use it from a test module with ``from tests.orthanc import orthanc_fixture  # noqa: F401`` and an ``orthanc``
argument. Without Orthanc installed the tests skip (CI installs it in .ci/run, so there they fail instead).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import DICOM, free_port, require_path, require_tool

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
PHILIPS = DICOM / "ct-head-phantom-philips"
NOT_IMAGES = frozenset({"DICOMDIR", "DIRFILE"})  # media directory objects, not instances a PACS would hold
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: its REST root and its DICOMweb root, both on 127.0.0.1 (and its DICOM port, when
    started with `modalities`)."""

    url: str
    log: Path
    dicom_port: int | None = None

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def get_json(self, path: str):
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as r:
            return json.loads(r.read())

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as r:
            return r.read()

    def post_json(self, path: str, body):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def delete(self, path: str) -> None:
        req = urllib.request.Request(f"{self.url}{path}", method="DELETE")
        with urllib.request.urlopen(req, timeout=30):
            pass

    def store(self, path: Path) -> dict:
        """POST one DICOM file to /instances; returns Orthanc's answer (ID, Status, ParentStudy, ...)."""
        req = urllib.request.Request(f"{self.url}/instances", data=path.read_bytes(), method="POST",
                                     headers={"Content-Type": "application/dicom"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())


AE_TITLE = "ORTHANC"


def orthanc_config(folder: Path, http_port: int, dicom_port: int, modalities: dict | None = None) -> dict:
    """The private config; with `modalities` (name -> [AET, host, port]) the DICOM server is on, and only those
    modalities, from their own host, may store, find, get or move."""
    if modalities is not None:
        return {**orthanc_config(folder, http_port, dicom_port), "DicomServerEnabled": True, "DicomAet": AE_TITLE,
                "DicomModalities": modalities, "DicomCheckModalityHost": True, "DicomAlwaysAllowEcho": False,
                "DicomAlwaysAllowStore": False, "DicomAlwaysAllowFind": False, "DicomAlwaysAllowGet": False,
                "DicomAlwaysAllowMove": False}
    return {
        "Name": "theatrum-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        # Orthanc 1.10 listens on every interface: refuse non-loopback HTTP clients and keep DICOM off.
        "RemoteAccessAllowed": False,
        "DicomServerEnabled": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_until_up(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with status {proc.returncode} at start:\n{_log_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/system", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"Orthanc did not answer GET /system in {START_TIMEOUT_S:.0f} s:\n{_log_tail(log)}")


@contextmanager
def run_orthanc(folder: Path, modalities: dict | None = None) -> Iterator[Orthanc]:
    """Start Orthanc with a private config in ``folder`` (its DICOM server on, for `modalities` only, when they
    are given); stop it (SIGTERM, then wait) on exit.

    Requires the `orthanc` and `orthanc-dicomweb` Debian packages.
    """
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = folder / "orthanc.json"
    config.write_text(json.dumps(orthanc_config(folder, http_port, dicom_port, modalities), indent=2))
    log = folder / "orthanc.log"
    url = f"http://127.0.0.1:{http_port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(ORTHANC), str(config)], cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        _wait_until_up(proc, url, log)
        yield Orthanc(url=url, log=log, dicom_port=dicom_port if modalities is not None else None)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def phantom_files(root: Path = PHILIPS) -> list[Path]:
    """Every image file under the phantom's DICOM/ folder (not its DICOMDIR/DIRFILE directory objects)."""
    return sorted(p for p in (root / "DICOM").rglob("*") if p.is_file() and p.name not in NOT_IMAGES)


@pytest.fixture(scope="session", name="orthanc")
def orthanc_fixture(tmp_path_factory) -> Iterator[Orthanc]:
    """A running Orthanc holding the Philips phantom (two studies: 28 + 1 and 54 + 1 instances)."""
    require_tool(ORTHANC, "Orthanc (Debian package `orthanc`)")
    require_tool(DICOMWEB_PLUGIN, "Orthanc's DICOMweb plugin (Debian package `orthanc-dicomweb`)")
    files = phantom_files(require_path(PHILIPS, "the Philips phantom in ../shared/dicom"))
    with run_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        for path in files:
            status = server.store(path)["Status"]
            assert status in ("Success", "AlreadyStored"), f"Orthanc refused {path}: {status}"
        yield server

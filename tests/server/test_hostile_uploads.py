"""Decompression bombs and lying headers, uploaded to a real server process: a 400 naming the file, nothing
stored, and the server's peak memory (VmHWM) stays within 200 MB of what it used before the upload."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from conftest import DICOM, require_path
from hostile_dicom import MiB, write_deflated, write_native_series
from serverproc import ServerProcess

MEMORY_LIMIT_MB = 200


def status_kb(pid: int, field: str) -> int:
    """A field of /proc/PID/status in kB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def zipped(paths: list[Path]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for path in paths:
            archive.write(path, path.name)
    return out.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    served = ServerProcess.start(tmp_path_factory.mktemp("hostile") / "data", env={"THEATRUM_WORKERS": "1"})
    # Warm up: a real deflated slice read once (one slice is no volume: a 400), so that what the import path
    # loads the first time is not counted as the bomb's.
    deflated = require_path(DICOM / "ct-slice-transfer-syntaxes" /
                            "CTImage.dcm_DeflatedExplicitVRLittleEndianTransferSyntax_1.2.840.10008.1.2.1.99.dcm")
    warm = served.api.request("POST", "/api/studies", zipped([deflated]), {"Content-Type": "application/zip"})
    assert warm.status == 400 and warm.json()["error"] == "no_volume", warm.body
    yield served
    served.stop()


@pytest.mark.parametrize("attack", ["deflated bomb (4 GiB from 4 MB)", "65535 x 65535 declared, 128 bytes held"])
def test_an_upload_attack_is_a_400_naming_the_file(server: ServerProcess, tmp_path: Path, attack: str):
    if attack.startswith("deflated"):
        files = [write_deflated(tmp_path / "bomb.dcm", 0.0, bytes(16 * MiB), 4096 // 16, undefined_length=True)]
    else:
        files = sorted(write_native_series(tmp_path / "s", 65535, 65535, bytes(128)).iterdir())
    assert sum(f.stat().st_size for f in files) < 5 * MiB
    before_objects = sorted(p.name for p in (server.data / "objects").rglob("*"))
    idle = status_kb(server.process.pid, "VmRSS")
    response = server.api.request("POST", "/api/studies", zipped(files), {"Content-Type": "application/zip"})
    peak = status_kb(server.process.pid, "VmHWM")
    assert response.status == 400, response.body[:500]
    body = response.json()
    assert body["error"] in ("bad_input", "bad_dicom") and files[0].name in body["detail"]
    assert sorted(p.name for p in (server.data / "objects").rglob("*")) == before_objects
    assert (peak - idle) / 1024 < MEMORY_LIMIT_MB, f"peak {peak / 1024:.0f} MB, idle {idle / 1024:.0f} MB"
    server.check_alive()

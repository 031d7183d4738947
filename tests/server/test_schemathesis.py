"""Schemathesis against the real server and its OpenAPI document: no 5xx, and every response fits the schema.

The server runs as a real process with a study already imported and reconstructed, a real Orthanc as its PACS,
and schemathesis is given real ids so that the id-taking operations reach their logic, not only 404s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import DICOM, REPO, free_port, require_path
from orthanc import orthanc_fixture  # noqa: F401

REGULAR = DICOM / "ct-head-phantom-philips" / "DICOM" / "S21570" / "S2010"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance," \
         "response_headers_conformance"


def _get(url: str, token: str) -> dict:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def served(tmp_path, orthanc):
    require_path(REGULAR, "the Philips head phantom")
    port = free_port()
    data = tmp_path / "data"
    env = {**os.environ, "THEATRUM_PACS_URL": orthanc.dicomweb_url, "THEATRUM_WORKERS": "1"}
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 (open for the whole life of the server)
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli.main", "serve", "--port", str(port), "--data", str(data),
         "--import", str(REGULAR)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        token = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                token = token or (data / "admin-token").read_text().strip()
                studies = _get(f"{base}/api/studies", token)["studies"]
                if studies:
                    meshes = _get(f"{base}/api/studies/{studies[0]['id']}/meshes", token)["meshes"]
                    if meshes:
                        break
            except (OSError, ValueError):
                pass
            time.sleep(0.3)
        else:
            raise AssertionError("the study was not imported and reconstructed in time")
        yield base, token, studies[0], meshes[0], tmp_path
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_schemathesis_finds_no_server_error_and_no_schema_violation(served):
    base, token, study, mesh, tmp_path = served
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    require_path(Path(schemathesis) if schemathesis else tmp_path / "schemathesis", "schemathesis (pip)")
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[parameters]\n"
        f'"path.study_id" = "{study["id"]}"\n'
        f'"path.mesh_id" = "{mesh["id"]}"\n'
    )
    run = subprocess.run(
        [schemathesis, "--config-file", str(config), "run", f"{base}/api/openapi.json",
         "-H", f"Authorization: Bearer {token}", "--checks", CHECKS, "--max-examples", "12",
         "--generation-deterministic", "--request-timeout", "30"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    log = (tmp_path / "server.log").read_text()
    assert run.returncode == 0, run.stdout[-6000:] + "\n--- server log ---\n" + log[-3000:]
    assert "internal error" not in log, log[-3000:]

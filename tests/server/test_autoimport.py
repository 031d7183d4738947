"""The start-up import logs the path the operator gave, and nothing of what is inside it (file and folder
names in a DICOM export often carry the patient's name)."""

from __future__ import annotations

import logging

from conftest import SYNTHETIC_PATIENT, write_ct_series
from hubtools import start

from server.appkeys import LIBRARY, MESH_REQUESTS
from server.services.autoimport import import_all


async def test_the_start_up_import_names_only_the_operators_path(aiohttp_server, tmp_path, caplog):
    server, app, _ = await start(aiohttp_server, tmp_path / "data")
    patient = SYNTHETIC_PATIENT["PatientName"]
    broken = tmp_path / "export" / patient / "SERIES 1"
    broken.mkdir(parents=True)
    (broken / f"{patient}.dcm").write_text("not DICOM")
    good = tmp_path / "good"
    write_ct_series(good / patient, [(0, 0, z) for z in range(4)])
    with caplog.at_level(logging.INFO, logger="theatrum.import"):
        await import_all([tmp_path / "export", good], app[LIBRARY], app[MESH_REQUESTS])
    lines = [r.getMessage() for r in caplog.records if r.name == "theatrum.import"]
    assert any(str(tmp_path / "export") in line and "not_dicom" in line for line in lines), lines
    assert any(str(good) in line and "imported" in line for line in lines), lines
    assert not any(patient in line or "SERIES 1" in line for line in lines), lines
    await server.close()

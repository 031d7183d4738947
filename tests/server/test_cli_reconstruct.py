"""End to end on the real Philips phantom, through the `theatrum` command line a user would type.

Closed skull meshes for the regular and the gantry-tilted series, the tilted mesh inside its sheared slab, the
DICOMDIR as input, the JSON summary, and exit code 2 with a one-line message for bad input.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from conftest import DICOM, REPO, require_path

from reconstruction.draco import accessor_array, read_glb
from reconstruction.gltf import gltf_to_lps
from reconstruction.pipeline import load_volume

PHILIPS = DICOM / "ct-head-phantom-philips"
REGULAR = PHILIPS / "DICOM" / "S21570" / "S2010"
TILTED = PHILIPS / "DICOM" / "S21610" / "S2010"


def theatrum(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli.main", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd or REPO)


def glb_meshes(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """preset -> (vertices in LPS mm, faces), read back from the GLB."""
    doc, binary = read_glb(path.read_bytes())
    out = {}
    for mesh in doc["meshes"]:
        [primitive] = mesh["primitives"]
        positions = accessor_array(doc, binary, primitive["attributes"]["POSITION"]).astype(np.float64)
        faces = accessor_array(doc, binary, primitive["indices"]).reshape(-1, 3)
        out[mesh["name"]] = (gltf_to_lps(positions), faces)
    return out


@pytest.fixture(scope="module")
def reconstructed(tmp_path_factory):
    require_path(PHILIPS, "the Philips head phantom")
    out = {}
    folder = tmp_path_factory.mktemp("cli")
    for name, series in (("regular", REGULAR), ("tilted", TILTED)):
        glb = folder / f"{name}.glb"
        run = theatrum("reconstruct", str(series), "--preset", "bone", "--out", str(glb), "--json")
        assert run.returncode == 0, run.stderr
        out[name] = (json.loads(run.stdout), glb)
    return out


@pytest.mark.parametrize("name", ["regular", "tilted"])
def test_each_series_gives_a_closed_skull(reconstructed, name):
    summary, glb = reconstructed[name]
    vertices, faces = glb_meshes(glb)["bone"]
    skull = trimesh.Trimesh(vertices, faces, process=False)
    assert skull.is_watertight and skull.is_winding_consistent
    assert skull.volume > 100_000  # mm³: a skull's bone, not a sliver (outward normals give a positive volume)
    [mesh] = summary["meshes"]
    assert mesh["triangles"] == len(faces) <= 300_000
    assert np.allclose(mesh["bbox_lps_mm"], [vertices.min(axis=0), vertices.max(axis=0)], atol=1e-3)


def test_tilted_mesh_lies_inside_the_sheared_slab(reconstructed):
    _summary, glb = reconstructed["tilted"]
    vertices, _ = glb_meshes(glb)["bone"]
    _scan, _series, volume, _ = load_volume([TILTED])
    normal = volume.normal
    heights = volume.positions @ normal
    d = vertices @ normal
    tolerance = 0.01  # mm
    assert d.min() >= heights.min() - tolerance and d.max() <= heights.max() + tolerance
    # In-plane: relative to the true (interpolated) slice origin at each vertex's height, every vertex lies in
    # the image rectangle. An axis-aligned box would not: the stack is sheared by the 18.5° tilt.
    k = np.interp(d, heights, np.arange(len(heights)))
    origin = volume.index_to_lps(np.c_[k, np.zeros_like(k), np.zeros_like(k)])
    local = vertices - origin
    rows, columns = volume.shape[1:]
    drow, dcol = volume.pixel_spacing
    u, w = local @ volume.row_direction, local @ volume.column_direction
    assert u.min() >= -tolerance and u.max() <= (columns - 1) * dcol + tolerance
    assert w.min() >= -tolerance and w.max() <= (rows - 1) * drow + tolerance
    shear = np.degrees(np.arccos(abs(normal @ np.array([0.0, 0.0, 1.0]))))
    assert shear == pytest.approx(18.5, abs=0.05)


def test_json_summary_has_every_field(reconstructed):
    summary, glb = reconstructed["tilted"]
    assert summary["series"]["description"] == "STEREOTAXIS"
    assert summary["series"]["modality"] == "CT" and summary["series"]["slices"] == 54
    assert summary["series"]["shape"] == [54, 512, 512]
    assert summary["series"]["spacing_mm"][0] == pytest.approx(2.3708, abs=1e-3)
    assert summary["series"]["warnings"] == []
    assert summary["out"] == str(glb) and summary["bytes"] == glb.stat().st_size
    assert set(summary["seconds"]) >= {"reading", "decoding", "meshing", "decimating", "writing"}
    [mesh] = summary["meshes"]
    assert set(mesh) == {"preset", "threshold", "triangles", "vertices", "bbox_lps_mm"}
    assert mesh["preset"] == "bone" and mesh["threshold"] == 300.5


def test_dicomdir_as_input_picks_the_same_best_series(tmp_path):
    require_path(PHILIPS, "the Philips head phantom")
    run = theatrum("series", str(PHILIPS / "DICOMDIR"), "--json")
    assert run.returncode == 0, run.stderr
    listing = json.loads(run.stdout)
    assert sorted(s["slices"] for s in listing["series"]) == [28, 54]
    assert any("missing" in k["reason"] for k in listing["skipped"])
    glb = tmp_path / "dicomdir.glb"
    run = theatrum("reconstruct", str(PHILIPS / "DICOMDIR"), "--out", str(glb), "--json", "--target-triangles",
                   "20000", "--series", "1")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["series"]["slices"] == listing["series"][0]["slices"]
    assert set(glb_meshes(glb)) == {"bone", "skin"}  # the CT default presets


def test_custom_threshold_and_preset(tmp_path):
    require_path(REGULAR, "the Philips head phantom")
    glb = tmp_path / "t.glb"
    run = theatrum("reconstruct", str(REGULAR), "--preset", "soft-tissue", "--threshold", "500.5",
                   "--target-triangles", "10000", "--out", str(glb), "--json", "--quiet")
    assert run.returncode == 0, run.stderr
    [mesh] = json.loads(run.stdout)["meshes"]
    assert mesh["preset"] == "soft-tissue" and mesh["threshold"] == 500.5 and mesh["triangles"] <= 10_000
    assert run.stderr == ""


@pytest.mark.parametrize(
    "args, names",
    [
        (["reconstruct", "/no/such/folder"], "/no/such/folder"),
        (["reconstruct", "{quirks}/MR_truncated.dcm"], "MR_truncated.dcm"),
        (["reconstruct", "{quirks}/zipMR.gz"], "zipMR.gz"),
        (["reconstruct", "{regular}", "--series", "1.2.3.4"], "1.2.3.4"),
        (["reconstruct", "{regular}", "--preset", "nope"], "nope"),
        (["reconstruct", "{regular}", "--threshold", "99999.5"], "99999.5"),
        (["reconstruct", "{regular}", "--out", "/no/such/dir/x.glb"], "/no/such/dir"),
        (["reconstruct", "{regular}", "--out", "x.obj"], "x.obj"),
        (["series", "/no/such/file.zip"], "/no/such/file.zip"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_problem(args, names, tmp_path):
    require_path(PHILIPS, "the Philips head phantom")
    quirks = DICOM / "pydicom-quirks"
    args = [a.format(quirks=quirks, regular=REGULAR) for a in args]
    if "--out" not in args and args[0] == "reconstruct":
        args += ["--out", str(tmp_path / "out.glb")]
    run = theatrum(*args, cwd=tmp_path)
    assert run.returncode == 2, (run.stdout, run.stderr)
    message = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(message) == 1 and names in message[0], run.stderr
    assert "Traceback" not in run.stderr
    assert not list(tmp_path.glob("*.glb")) and not list(tmp_path.glob(".*tmp*")), "no half-written file"

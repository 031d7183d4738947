"""Delivery variants: the Draco GLB keeps vertices within 0.05 mm, is compact and valid; the coarse LOD is small."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import DracoPy
import numpy as np
import pytest
from conftest import DICOM, REPO, require_path
from scipy.spatial import cKDTree

from reconstruction.delivery import COARSE_TRIANGLES, mesh_artifacts
from reconstruction.draco import EXTENSION, accessor_array, quantization_bits, read_glb
from reconstruction.pipeline import load_volume
from reconstruction.surface import extract_surface

VALIDATOR_SCRIPT = REPO / "tests" / "tools" / "validate_gltf.mjs"
VALIDATOR_PACKAGE = REPO / "web-client" / "node_modules" / "gltf-validator"
REGULAR = DICOM / "ct-head-phantom-philips" / "DICOM" / "S21570" / "S2010"


@pytest.fixture(scope="module")
def skull():
    require_path(REGULAR, "the Philips head phantom")
    _scan, _series, volume, _ = load_volume([REGULAR])
    mesh = extract_surface(volume, "bone", target_triangles=300_000)
    return volume, mesh, mesh_artifacts(mesh, volume)


def positions_of(glb: bytes) -> np.ndarray:
    doc, binary = read_glb(glb)
    [primitive] = doc["meshes"][0]["primitives"]
    return accessor_array(doc, binary, primitive["attributes"]["POSITION"]).astype(np.float64)


def draco_payload(glb: bytes):
    doc, binary = read_glb(glb)
    [primitive] = doc["meshes"][0]["primitives"]
    ext = primitive["extensions"][EXTENSION]
    view = doc["bufferViews"][ext["bufferView"]]
    start = view.get("byteOffset", 0)
    return doc, primitive, DracoPy.decode(binary[start : start + view["byteLength"]])


def test_draco_positions_stay_within_five_hundredths_of_a_millimetre(skull):
    _volume, mesh, artifacts = skull
    original = positions_of(artifacts["full"]) * 1000.0  # glTF metres -> mm
    _doc, _primitive, decoded = draco_payload(artifacts["draco"])
    points = np.asarray(decoded.points, dtype=np.float64) * 1000.0
    assert len(decoded.faces) == mesh.triangles
    # Every decoded vertex lies within 0.05 mm of an original one, and every original one has a decoded one.
    d_forward, _ = cKDTree(original).query(points)
    d_back, _ = cKDTree(points).query(original)
    assert max(d_forward.max(), d_back.max()) <= 0.05, (d_forward.max(), d_back.max())


def test_draco_is_compact(skull):
    _volume, mesh, artifacts = skull
    per_triangle = len(artifacts["draco"]) / mesh.triangles
    assert per_triangle < len(artifacts["full"]) / mesh.triangles / 5
    assert per_triangle <= 2.0, f"{per_triangle:.2f} bytes per triangle"


def test_draco_document_declares_the_extension_and_keeps_extras(skull):
    _volume, _mesh, artifacts = skull
    plain, _ = read_glb(artifacts["full"])
    doc, primitive, decoded = draco_payload(artifacts["draco"])
    assert EXTENSION in doc["extensionsUsed"] and EXTENSION in doc["extensionsRequired"]
    assert set(primitive["extensions"][EXTENSION]["attributes"]) == {"POSITION", "NORMAL"}
    assert doc["scenes"][0]["extras"] == plain["scenes"][0]["extras"]
    assert doc["accessors"][primitive["attributes"]["POSITION"]]["min"] == \
        plain["accessors"][plain["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]["min"]
    normals = np.asarray(decoded.normals)
    assert normals.shape == (len(decoded.points), 3)
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0, atol=0.01)


def test_coarse_level_is_within_its_budget_and_covers_the_same_anatomy(skull):
    _volume, mesh, artifacts = skull
    doc, _ = read_glb(artifacts["lod0"])
    triangles = doc["accessors"][doc["meshes"][0]["primitives"][0]["indices"]]["count"] // 3
    assert 0 < triangles <= COARSE_TRIANGLES < mesh.triangles
    full, coarse = positions_of(artifacts["full"]), positions_of(artifacts["lod0"])
    assert np.allclose(full.min(axis=0), coarse.min(axis=0), atol=0.002)  # metres: within 2 mm
    assert np.allclose(full.max(axis=0), coarse.max(axis=0), atol=0.002)


@pytest.mark.parametrize("extent_m", [0.05, 0.25, 0.5, 2.0])
def test_quantization_bits_meet_the_error_bound(extent_m):
    bits = quantization_bits(extent_m, 0.05)
    step_mm = extent_m * 1000.0 / (2**bits - 1)
    assert np.sqrt(3) / 2 * step_mm <= 0.05
    assert np.sqrt(3) / 2 * step_mm * 2 > 0.05 or bits == 8  # no more bits than needed


@pytest.mark.parametrize("kind", ["draco", "draco_lod0", "lod0"])
def test_khronos_validator_accepts_every_variant(skull, kind, tmp_path):
    node = shutil.which("node")
    require_path(Path(node) if node else tmp_path / "node-not-on-PATH", "node (Node.js)")
    require_path(VALIDATOR_PACKAGE, "gltf-validator (run `npm ci` in web-client)")
    path = tmp_path / f"{kind}.glb"
    path.write_bytes(skull[2][kind])
    run = subprocess.run(["node", str(VALIDATOR_SCRIPT), str(path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    issues = json.loads(run.stdout)["issues"]
    assert issues["numErrors"] == 0, issues["messages"]

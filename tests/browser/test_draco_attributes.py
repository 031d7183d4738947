"""The Draco GLB as a browser decodes it: three.js' DRACOLoader reads each attribute by the unique id that
KHR_draco_mesh_compression names, so those ids must be the stream's own. Decoded with the Draco decoder that
three.js ships (tests/browser/draco_attributes.cjs), POSITION must fill the POSITION accessor's min/max.

DracoPy writes NORMAL as id 0 and POSITION as id 1; a writer that declared them the other way round would give a
browser unit normals as positions, which this test catches.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
from conftest import REPO, require_path

from reconstruction.draco import draco_glb, read_glb
from reconstruction.gltf import glb_bytes
from reconstruction.mesh import Mesh

SCRIPT = Path(__file__).with_name("draco_attributes.cjs")
DECODER = REPO / "web-client" / "node_modules" / "three" / "examples" / "jsm" / "libs" / "draco" / "draco_decoder.js"


def octahedron(radius_mm: float, centre_mm) -> Mesh:
    """A closed octahedron far from the origin (so positions cannot pass for unit normals)."""
    v = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)
    faces = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]],
                     dtype=np.uint32)
    return Mesh("bone", 300.0, (v * radius_mm + centre_mm).astype(np.float32), faces, v.astype(np.float32))


def test_browsers_decode_positions_where_the_gltf_says(tmp_path):
    node = shutil.which("node")
    require_path(Path(node) if node else tmp_path / "node-not-on-PATH", "node (Node.js)")
    require_path(DECODER, "three's Draco decoder (run `npm ci` in web-client)")
    glb = draco_glb(glb_bytes([octahedron(40.0, [-30.0, 120.0, 700.0])]))
    path = tmp_path / "octahedron.glb"
    path.write_bytes(glb)
    run = subprocess.run([node, str(SCRIPT), str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    [attributes] = json.loads(run.stdout)
    decoded = {a["name"]: a for a in attributes}
    doc, _ = read_glb(glb)
    accessor = doc["accessors"][doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    np.testing.assert_allclose(decoded["POSITION"]["min"], accessor["min"], atol=1e-4)
    np.testing.assert_allclose(decoded["POSITION"]["max"], accessor["max"], atol=1e-4)
    assert max(abs(x) for x in decoded["NORMAL"]["min"] + decoded["NORMAL"]["max"]) <= 1.0 + 1e-3

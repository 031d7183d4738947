"""GLB writer: the bytes parsed back by hand, the axis convention on known points, privacy, and the Khronos
glTF-Validator's verdict."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, require_path

from reconstruction import __version__
from reconstruction.gltf import LPS_TO_GLTF, LPS_TO_GLTF_ROTATION, glb_bytes, write_glb
from reconstruction.mesh import Mesh
from reconstruction.presets import CT_PRESETS
from reconstruction.surface import extract_surface
from reconstruction.volume import Volume

VALIDATOR_SCRIPT = REPO / "tests" / "tools" / "validate_gltf.mjs"
VALIDATOR_PACKAGE = REPO / "web-client" / "node_modules" / "gltf-validator"
COMPONENTS = {5123: np.uint16, 5125: np.uint32, 5126: np.float32}
WIDTH = {"SCALAR": 1, "VEC3": 3}


def parse_glb(data: bytes) -> tuple[dict, bytes]:
    """Split a GLB into its JSON document and BIN chunk, checking the container on the way."""
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert magic == 0x46546C67 and version == 2 and length == len(data)
    json_length, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A and json_length % 4 == 0
    text = data[20 : 20 + json_length]
    doc = json.loads(text.decode("utf-8"))
    assert text == text.rstrip(b" ") + b" " * (len(text) - len(text.rstrip(b" ")))  # padded with spaces only
    offset = 20 + json_length
    if offset == len(data):
        return doc, b""
    bin_length, bin_type = struct.unpack_from("<II", data, offset)
    assert bin_type == 0x004E4942 and bin_length % 4 == 0 and offset + 8 + bin_length == len(data)
    binary = data[offset + 8 :]
    assert doc["buffers"] == [{"byteLength": len(binary)}]
    return doc, binary


def read_accessor(doc: dict, binary: bytes, index: int) -> np.ndarray:
    accessor = doc["accessors"][index]
    view = doc["bufferViews"][accessor["bufferView"]]
    assert view["byteOffset"] % 4 == 0
    dtype = np.dtype(COMPONENTS[accessor["componentType"]]).newbyteorder("<")
    width = WIDTH[accessor["type"]]
    assert view["byteLength"] == accessor["count"] * width * dtype.itemsize
    values = np.frombuffer(binary, dtype, accessor["count"] * width, view["byteOffset"])
    return values.reshape(-1, width) if width > 1 else values


def tetrahedron(preset: str = "bone", at=(10.0, 20.0, 30.0), threshold: float = 300.5) -> Mesh:
    """A small tetrahedron whose first vertex is at LPS ``at`` mm, wound outward, with outward normals."""
    base = np.array([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], dtype=np.uint32)
    normals = base - base.mean(axis=0)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return Mesh(preset, threshold, (base + at).astype(np.float32), faces, normals.astype(np.float32))


def named_volume() -> Volume:
    """A tiny volume whose description and UID carry a fake patient's name and identifiers."""
    return Volume(
        voxels=np.zeros((2, 2, 2), np.int16),
        positions=np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
        row_direction=np.array([1.0, 0.0, 0.0]),
        column_direction=np.array([0.0, 1.0, 0.0]),
        pixel_spacing=(1.0, 1.0),
        description="HEAD^DOE^JOHNATHAN 1984-02-29 St. Elsewhere",
        series_uid="1.2.826.0.1.3680043.8.498.1234567890",
        pixel_hash="sha256:5be1c0ffee",
    )


def test_lps_maps_to_gltf_axes_on_known_points():
    mesh = tetrahedron()
    doc, binary = parse_glb(glb_bytes([mesh]))
    primitive = doc["meshes"][0]["primitives"][0]
    positions = read_accessor(doc, binary, primitive["attributes"]["POSITION"])
    # L -> +x, S -> +y, P -> -z, millimetres -> metres.
    np.testing.assert_allclose(positions[0], [0.010, 0.030, -0.020], atol=1e-7)
    np.testing.assert_allclose(positions[1] - positions[0], [0.005, 0.0, 0.0], atol=1e-7)  # +L
    np.testing.assert_allclose(positions[2] - positions[0], [0.0, 0.0, -0.005], atol=1e-7)  # +P
    np.testing.assert_allclose(positions[3] - positions[0], [0.0, 0.005, 0.0], atol=1e-7)  # +S
    accessor = doc["accessors"][primitive["attributes"]["POSITION"]]
    assert accessor["min"] == positions.min(axis=0).tolist()
    assert accessor["max"] == positions.max(axis=0).tolist()
    normals = read_accessor(doc, binary, primitive["attributes"]["NORMAL"])
    np.testing.assert_allclose(normals, mesh.normals @ LPS_TO_GLTF_ROTATION.T, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    indices = read_accessor(doc, binary, primitive["indices"])
    np.testing.assert_array_equal(indices.reshape(-1, 3), mesh.faces)


def test_axis_change_is_a_proper_rotation_and_keeps_outward_winding():
    assert np.linalg.det(LPS_TO_GLTF_ROTATION) == pytest.approx(1.0)
    mesh = tetrahedron()
    doc, binary = parse_glb(glb_bytes([mesh]))
    primitive = doc["meshes"][0]["primitives"][0]
    p = read_accessor(doc, binary, primitive["attributes"]["POSITION"]).astype(np.float64)
    f = read_accessor(doc, binary, primitive["indices"]).reshape(-1, 3)
    signed_volume = np.einsum("ij,ij->i", p[f[:, 0]], np.cross(p[f[:, 1]], p[f[:, 2]])).sum() / 6
    assert signed_volume == pytest.approx(5.0**3 / 6 * 1e-9, rel=1e-4)


def test_extras_carry_both_transforms_and_the_inverse_maps_back_to_lps():
    mesh = tetrahedron()
    doc, binary = parse_glb(glb_bytes([mesh], volume=named_volume(), extras={"title": "training case 7"}))
    extras = doc["scenes"][doc["scene"]]["extras"]
    to_gltf, to_lps = np.array(extras["lps_to_gltf"]), np.array(extras["gltf_to_lps"])
    np.testing.assert_array_equal(to_gltf, LPS_TO_GLTF)
    np.testing.assert_allclose(to_lps @ to_gltf, np.eye(4), atol=1e-12)
    positions = read_accessor(doc, binary, doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"])
    homogeneous = np.c_[positions.astype(np.float64), np.ones(len(positions))]
    np.testing.assert_allclose((homogeneous @ to_lps.T)[:, :3], mesh.vertices, atol=1e-4)
    assert extras["units"] == {"gltf": "m", "lps": "mm", "threshold": "HU"}
    assert extras["software_version"] == __version__
    assert extras["source_pixel_hash"] == "sha256:5be1c0ffee"
    assert extras["title"] == "training case 7"


def test_one_named_node_mesh_and_material_per_preset():
    meshes = [tetrahedron("bone", threshold=300.5), tetrahedron("skin", (0.0, 0.0, 0.0), threshold=-500.5)]
    doc, _ = parse_glb(glb_bytes(meshes))
    assert [n["name"] for n in doc["nodes"]] == ["bone", "skin"]
    assert [m["name"] for m in doc["meshes"]] == ["bone", "skin"]
    assert doc["scenes"][0]["nodes"] == [0, 1]
    for node, preset, level in zip(doc["nodes"], ("bone", "skin"), (300.5, -500.5), strict=True):
        assert node["extras"]["preset"] == preset and node["extras"]["threshold"] == level
        mesh = doc["meshes"][node["mesh"]]
        assert mesh["extras"]["preset"] == preset and mesh["extras"]["threshold"] == level
        material = doc["materials"][mesh["primitives"][0]["material"]]
        assert material["name"] == preset
        color = material["pbrMetallicRoughness"]["baseColorFactor"]
        assert color == pytest.approx(list(CT_PRESETS[preset].color))
    assert "alphaMode" not in doc["materials"][0]  # opaque bone
    assert doc["materials"][1]["alphaMode"] == "BLEND"  # translucent skin


def test_nothing_identifying_reaches_the_file():
    volume = named_volume()
    data = glb_bytes([tetrahedron()], volume=volume)
    for secret in ("DOE", "JOHNATHAN", "1984", "Elsewhere", volume.series_uid, volume.description):
        assert secret.encode() not in data
    assert volume.pixel_hash.encode() in data


def test_index_width_follows_the_vertex_count():
    small = tetrahedron()
    n = 70_000
    vertices = np.zeros((n, 3), np.float32)
    vertices[:, 0] = np.arange(n)
    vertices[1::2, 1] = 1.0
    faces = np.stack([np.arange(n - 2), np.arange(1, n - 1), np.arange(2, n)], axis=1).astype(np.uint32)
    normals = np.tile(np.array([0.0, 0.0, 1.0], np.float32), (n, 1))
    large = Mesh("bone", 300.5, vertices, faces, normals)
    for mesh, component in ((small, 5123), (large, 5125)):
        doc, binary = parse_glb(glb_bytes([mesh]))
        primitive = doc["meshes"][0]["primitives"][0]
        assert doc["accessors"][primitive["indices"]]["componentType"] == component
        np.testing.assert_array_equal(read_accessor(doc, binary, primitive["indices"]), mesh.faces.ravel())


def test_an_empty_mesh_is_a_node_without_geometry():
    empty = Mesh("vessels", 150.5, np.empty((0, 3), np.float32), np.empty((0, 3), np.uint32), np.empty((0, 3)))
    doc, _ = parse_glb(glb_bytes([tetrahedron(), empty]))
    assert doc["nodes"][1] == {
        "name": "vessels",
        "extras": {
            "preset": "vessels",
            "threshold": 150.5,
            "triangles": 0,
            "keep_largest": None,
            "slice_smoothing": False,
        },
    }
    assert len(doc["meshes"]) == 1


def test_write_glb_is_atomic(tmp_path):
    out = tmp_path / "study.glb"
    size = write_glb(out, [tetrahedron()], extras={"title": "t"})
    assert size == out.stat().st_size and out.read_bytes() == glb_bytes([tetrahedron()], extras={"title": "t"})
    with pytest.raises(TypeError):
        write_glb(out, [tetrahedron()], extras={"title": object()})  # not JSON: fails before any write
    assert out.stat().st_size == size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.glb"]


def test_khronos_validator_reports_no_errors(tmp_path):
    node = shutil.which("node")
    require_path(Path(node) if node else tmp_path / "node-not-on-PATH", "node (Node.js)")
    require_path(VALIDATOR_PACKAGE, "gltf-validator (run `npm ci` in web-client)")
    sphere = Volume(
        voxels=_ball(),
        positions=np.c_[np.zeros(24), np.zeros(24), np.arange(24) * 1.5 - 600.0],
        row_direction=np.array([1.0, 0.0, 0.0]),
        column_direction=np.array([0.0, 1.0, 0.0]),
        pixel_spacing=(0.8, 0.8),
        pixel_hash="sha256:00",
    )
    meshes = [extract_surface(sphere, "bone"), extract_surface(sphere, "skin", target_triangles=500)]
    empty = Mesh("vessels", 150.5, np.empty((0, 3), np.float32), np.empty((0, 3), np.uint32), np.empty((0, 3)))
    path = tmp_path / "sphere.glb"
    write_glb(path, [*meshes, empty], volume=sphere, extras={"title": "validator"})
    run = subprocess.run(["node", str(VALIDATOR_SCRIPT), str(path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    issues = report["issues"]
    assert issues["numErrors"] == 0, issues["messages"]
    assert issues["numWarnings"] == 0, issues["messages"]
    assert report["info"]["totalTriangleCount"] == sum(m.triangles for m in meshes)


def _ball() -> np.ndarray:
    """int16 HU: air, a 'skin' ball of soft tissue, and a 'bone' ball inside it."""
    k, j, i = np.meshgrid(np.arange(24) * 1.5, np.arange(32) * 0.8, np.arange(32) * 0.8, indexing="ij")
    r = np.sqrt((k - 17.0) ** 2 + (j - 12.5) ** 2 + (i - 12.5) ** 2)
    hu = np.where(r < 10.0, 40.0, -1000.0) + np.where(r < 6.0, 1000.0, 0.0)
    return hu.astype(np.int16)

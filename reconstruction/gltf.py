"""GLB (binary glTF 2.0) writer for the meshes of one reconstruction.

Axes: glTF is right-handed, +Y up, in metres. The patient stands in anatomical position: Superior is up and
the face looks toward +Z. A point in patient LPS millimetres maps to glTF as

    (x, y, z)_glTF = 0.001 * (L, S, -P)          i.e. LPS_TO_GLTF @ (L, P, S, 1)

a proper rotation (determinant +1) times a scale, so normals rotate by ``LPS_TO_GLTF_ROTATION`` alone. No
translation: glTF coordinates are the scanner's patient coordinates, so the client may recentre for display.

The file holds one node and one mesh per preset (both named after it), one material per tissue; or, for named
structures (a segmentation's segments), one node, mesh and material per structure, named after it and in its
colour. And these extras, which carry nothing that identifies the patient (no names, IDs, dates, institution, UIDs,
descriptions):

``scenes[0].extras``
    ``lps_to_gltf``/``gltf_to_lps``: the two 4x4 homogeneous matrices, row-major nested lists, acting on
    column vectors (mm -> m and m -> mm). ``units``: {"gltf": "m", "lps": "mm", "threshold": the volume's
    units, e.g. "HU"}. ``software_version``: reconstruction.__version__. ``source_pixel_hash``:
    Volume.pixel_hash of the voxels the surfaces come from. ``modality``. Plus whatever the caller passes in
    ``extras`` (e.g. a de-identified ``title``); the caller answers for its content.
``nodes[n].extras`` and ``meshes[n].extras``
    ``preset``, ``threshold`` (the iso-level, in ``units.threshold``), ``triangles``, and how the surface was
    made: ``keep_largest`` (how many of its largest connected surfaces were kept, null for all) and
    ``slice_smoothing`` (whether thick slices' terraces were smoothed away). A structure's node adds its
    ``Mesh.extras`` (``reconstruction.structure_surface``: segment number, codes, volume).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .mesh import Mesh
from .presets import CT_PRESETS, MR_PRESETS, Preset, presets_for
from .volume import Volume

LPS_TO_GLTF_ROTATION = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
LPS_TO_GLTF = np.block([[0.001 * LPS_TO_GLTF_ROTATION, np.zeros((3, 1))], [np.zeros((1, 3)), np.ones((1, 1))]])
GLTF_TO_LPS = np.block([[1000.0 * LPS_TO_GLTF_ROTATION.T, np.zeros((3, 1))], [np.zeros((1, 3)), np.ones((1, 1))]])

_GLB_MAGIC = 0x46546C67  # "glTF"
_CHUNK_JSON = 0x4E4F534A  # "JSON"
_CHUNK_BIN = 0x004E4942  # "BIN\0"
_FLOAT = 5126
_UNSIGNED_SHORT = 5123
_UNSIGNED_INT = 5125
_ARRAY_BUFFER = 34962
_ELEMENT_ARRAY_BUFFER = 34963
_TRIANGLES = 4
# Used for a mesh whose preset no table knows (e.g. a custom threshold under a new name).
_FALLBACK_PRESET = Preset("custom", "fixed", None, (0.6, 0.6, 0.6, 1.0), roughness=0.5)


def lps_to_gltf(points_mm: np.ndarray) -> np.ndarray:
    """LPS millimetres (N, 3) -> glTF metres (N, 3), float64."""
    return np.asarray(points_mm, dtype=np.float64) @ LPS_TO_GLTF[:3, :3].T


def gltf_to_lps(points_m: np.ndarray) -> np.ndarray:
    """glTF metres (N, 3) -> LPS millimetres (N, 3), float64."""
    return np.asarray(points_m, dtype=np.float64) @ GLTF_TO_LPS[:3, :3].T


def write_glb(
    path: str | Path,
    meshes: Sequence[Mesh],
    *,
    extras: Mapping[str, Any] | None = None,
    volume: Volume | None = None,
) -> int:
    """Write ``glb_bytes(meshes, ...)`` to ``path`` atomically (a temporary file in the same folder, then
    os.replace). Returns the number of bytes written. Requires the folder to exist."""
    data = glb_bytes(meshes, extras=extras, volume=volume)
    path = Path(path)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return len(data)


def glb_bytes(
    meshes: Sequence[Mesh],
    *,
    extras: Mapping[str, Any] | None = None,
    volume: Volume | None = None,
) -> bytes:
    """The GLB of ``meshes``: one node, mesh and material per preset. ``volume`` (optional) supplies the
    modality, the units of the thresholds and the source pixel hash; its description and UIDs are never
    written. Requires JSON-serialisable ``extras``."""
    modality = volume.modality if volume is not None else "CT"
    units = volume.units if volume is not None else ("HU" if modality == "CT" else "")
    binary = _Binary()
    doc: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": f"theatrum reconstruction {__version__}"},
        "scene": 0,
        "scenes": [
            {
                "name": "patient",
                "nodes": list(range(len(meshes))),
                "extras": {
                    **dict(extras or {}),
                    "lps_to_gltf": LPS_TO_GLTF.tolist(),
                    "gltf_to_lps": GLTF_TO_LPS.tolist(),
                    "units": {"gltf": "m", "lps": "mm", "threshold": units},
                    "modality": modality,
                    "software_version": __version__,
                    "source_pixel_hash": volume.pixel_hash if volume is not None else "",
                },
            }
        ],
        "nodes": [],
        "meshes": [],
        "materials": [],
        "accessors": [],
        "bufferViews": [],
    }
    materials: dict[str, int] = {}
    for mesh in meshes:
        name = mesh.name or mesh.preset
        node: dict[str, Any] = {"name": name, "extras": _mesh_extras(mesh)}
        if mesh.triangles > 0:
            look = _look_of(mesh.preset, modality) if mesh.color is None else _structure_look(mesh.color)
            if name not in materials:
                materials[name] = len(doc["materials"])
                doc["materials"].append(_material(name, look))
            node["mesh"] = len(doc["meshes"])
            doc["meshes"].append(
                {
                    "name": name,
                    "primitives": [
                        {
                            "attributes": _vertex_accessors(doc, binary, mesh),
                            "indices": _index_accessor(doc, binary, mesh),
                            "material": materials[name],
                            "mode": _TRIANGLES,
                        }
                    ],
                    "extras": _mesh_extras(mesh),
                }
            )
        doc["nodes"].append(node)
    payload = binary.bytes()
    if payload:
        doc["buffers"] = [{"byteLength": len(payload)}]
    for key in ("meshes", "materials", "accessors", "bufferViews"):
        if not doc[key]:
            del doc[key]
    return glb_container(json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8"), payload)


def _mesh_extras(mesh: Mesh) -> dict[str, Any]:
    return {
        "preset": mesh.preset,
        "threshold": float(mesh.threshold),
        "triangles": mesh.triangles,
        "keep_largest": mesh.keep_largest,
        "slice_smoothing": mesh.slice_smoothing,
        **dict(mesh.extras),
    }


def _structure_look(color: tuple[float, float, float, float]) -> Preset:
    """The material of a named structure: its own colour, satin."""
    return Preset("structure", "fixed", None, tuple(float(c) for c in color), roughness=0.5)  # type: ignore[arg-type]


def _look_of(name: str, modality: str) -> Preset:
    """The preset that gives a mesh its colour: the modality's table first, then the other one."""
    for table in (presets_for(modality), CT_PRESETS, MR_PRESETS):
        if name in table:
            return table[name]
    return _FALLBACK_PRESET


def _material(name: str, preset: Preset) -> dict[str, Any]:
    material: dict[str, Any] = {
        "name": name,
        "pbrMetallicRoughness": {
            "baseColorFactor": [float(c) for c in preset.color],
            "metallicFactor": float(preset.metallic),
            "roughnessFactor": float(preset.roughness),
        },
    }
    if preset.alpha_mode != "OPAQUE":
        material["alphaMode"] = preset.alpha_mode
    return material


def _vertex_accessors(doc: dict, binary: _Binary, mesh: Mesh) -> dict[str, int]:
    positions = lps_to_gltf(mesh.vertices).astype(np.float32)
    normals = _unit(np.asarray(mesh.normals, dtype=np.float64) @ LPS_TO_GLTF_ROTATION.T).astype(np.float32)
    attributes = {}
    for name, values in (("POSITION", positions), ("NORMAL", normals)):
        accessor: dict[str, Any] = {
            "bufferView": _buffer_view(doc, binary, values, _ARRAY_BUFFER),
            "componentType": _FLOAT,
            "count": len(values),
            "type": "VEC3",
        }
        if name == "POSITION":
            accessor["min"] = values.min(axis=0).tolist()
            accessor["max"] = values.max(axis=0).tolist()
        attributes[name] = len(doc["accessors"])
        doc["accessors"].append(accessor)
    return attributes


def _index_accessor(doc: dict, binary: _Binary, mesh: Mesh) -> int:
    # 65535 is the primitive-restart value of 16-bit indices, which glTF forbids as an index.
    small = len(mesh.vertices) <= 65535
    indices = np.ascontiguousarray(mesh.faces, dtype=np.uint16 if small else np.uint32).ravel()
    doc["accessors"].append(
        {
            "bufferView": _buffer_view(doc, binary, indices, _ELEMENT_ARRAY_BUFFER),
            "componentType": _UNSIGNED_SHORT if small else _UNSIGNED_INT,
            "count": len(indices),
            "type": "SCALAR",
        }
    )
    return len(doc["accessors"]) - 1


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Unit vectors; a zero vector becomes +Y so that every NORMAL is valid glTF."""
    length = np.linalg.norm(vectors, axis=1, keepdims=True)
    out = np.divide(vectors, length, out=np.zeros_like(vectors), where=length > 0)
    out[length[:, 0] == 0] = (0.0, 1.0, 0.0)
    return out


def _buffer_view(doc: dict, binary: _Binary, values: np.ndarray, target: int) -> int:
    offset = binary.append(np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<"), copy=False))
    doc["bufferViews"].append({"buffer": 0, "byteOffset": offset, "byteLength": values.nbytes, "target": target})
    return len(doc["bufferViews"]) - 1


class _Binary:
    """The BIN chunk being assembled: little-endian arrays, each starting on a 4-byte boundary."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def append(self, values: np.ndarray) -> int:
        offset = self._size
        data = values.tobytes()
        self._parts.append(data + b"\0" * (-len(data) % 4))
        self._size += len(self._parts[-1])
        return offset

    def bytes(self) -> bytes:
        return b"".join(self._parts)


def glb_container(json_chunk: bytes, bin_chunk: bytes) -> bytes:
    """The GLB header and chunks: JSON padded with spaces, BIN with zeros, both to 4 bytes."""
    json_chunk += b" " * (-len(json_chunk) % 4)
    chunks = struct.pack("<II", len(json_chunk), _CHUNK_JSON) + json_chunk
    if bin_chunk:
        chunks += struct.pack("<II", len(bin_chunk), _CHUNK_BIN) + bin_chunk
    return struct.pack("<III", _GLB_MAGIC, 2, 12 + len(chunks)) + chunks

"""Draco-compressed GLB (``KHR_draco_mesh_compression``) made from a plain GLB, for delivery to headsets.

Every triangle primitive's POSITION, NORMAL and indices are replaced by one Draco-encoded bufferView
(DracoPy, edgebreaker). Positions are quantized on a grid chosen per primitive so that no vertex moves by more
than ``max_error_mm`` (in patient millimetres: 3D error, all three axes rounding at once); normals are
quantized to 10 bits (octahedral), which is well under a degree. The accessors keep their count, type and
POSITION min/max, as the extension requires, so the document stays valid glTF.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import DracoPy
import numpy as np

from .gltf import glb_container

EXTENSION = "KHR_draco_mesh_compression"
DEFAULT_MAX_ERROR_MM = 0.05
NORMAL_BITS = 10
COMPRESSION_LEVEL = 7
_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
_DTYPES = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}


class GlbFormatError(ValueError):
    """The bytes are not a GLB this module can read."""


def read_glb(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Split a GLB into its JSON document and BIN chunk. Requires a glTF 2.0 binary container."""
    if len(data) < 20 or data[:4] != b"glTF":
        raise GlbFormatError("not a GLB (bad magic)")
    _magic, version, length = struct.unpack_from("<III", data, 0)
    if version != 2 or length != len(data):
        raise GlbFormatError(f"GLB version {version}, length {length} for {len(data)} bytes")
    offset, doc, binary = 12, None, b""
    while offset < length:
        size, kind = struct.unpack_from("<II", data, offset)
        chunk = data[offset + 8 : offset + 8 + size]
        if kind == 0x4E4F534A:
            doc = json.loads(chunk)
        elif kind == 0x004E4942:
            binary = chunk
        offset += 8 + size
    if doc is None:
        raise GlbFormatError("GLB without a JSON chunk")
    return doc, binary


def accessor_array(doc: dict[str, Any], binary: bytes, index: int) -> np.ndarray:
    """The values of accessor ``index`` as an (count, components) array. Requires a tightly packed view."""
    accessor = doc["accessors"][index]
    view = doc["bufferViews"][accessor["bufferView"]]
    dtype = np.dtype(_DTYPES[accessor["componentType"]]).newbyteorder("<")
    n = _COMPONENTS[accessor["type"]]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    values = np.frombuffer(binary, dtype=dtype, count=accessor["count"] * n, offset=start)
    return values.reshape(accessor["count"], n)


def quantization_bits(extent_m: float, max_error_mm: float) -> int:
    """Bits per axis so that the 3D rounding error stays within ``max_error_mm`` over ``extent_m`` metres.

    Draco rounds each axis to a grid of ``extent / (2**bits - 1)``; the worst 3D error is √3/2 of a step.
    Requires max_error_mm > 0.
    """
    step_m = (max_error_mm / 1000.0) * 2.0 / math.sqrt(3.0)
    steps = max(1.0, extent_m / step_m)
    return int(min(30, max(8, math.ceil(math.log2(steps + 1)))))


def draco_glb(plain: bytes, *, max_error_mm: float = DEFAULT_MAX_ERROR_MM) -> bytes:
    """Re-encode every triangle primitive of a plain GLB with Draco. Requires max_error_mm > 0."""
    if max_error_mm <= 0:
        raise ValueError("max_error_mm must be positive")
    doc, binary = read_glb(plain)
    out = bytearray()
    views: list[dict[str, Any]] = []
    for mesh in doc.get("meshes", []):
        for primitive in mesh["primitives"]:
            attributes = primitive["attributes"]
            positions = accessor_array(doc, binary, attributes["POSITION"]).astype(np.float64)
            faces = accessor_array(doc, binary, primitive["indices"]).reshape(-1, 3).astype(np.uint32)
            normals = (accessor_array(doc, binary, attributes["NORMAL"]).astype(np.float64)
                       if "NORMAL" in attributes else None)
            origin = positions.min(axis=0)
            extent = float((positions.max(axis=0) - origin).max()) or 1e-3
            encoded = DracoPy.encode(
                positions, faces,
                quantization_bits=quantization_bits(extent, max_error_mm),
                quantization_range=extent, quantization_origin=origin,
                compression_level=COMPRESSION_LEVEL,
                normals=normals, normal_quantization_bits=NORMAL_BITS if normals is not None else None,
            )
            offset = len(out)
            out += encoded + b"\0" * (-len(encoded) % 4)
            views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(encoded)})
            # The unique ids DracoPy gives its attributes: normals first (id 0) when present, then positions.
            # tests/browser/test_draco_attributes.py decodes with three.js' own decoder to hold this true.
            ids = {"NORMAL": 0, "POSITION": 1} if normals is not None else {"POSITION": 0}
            for name in list(attributes):
                if name not in ids:
                    del attributes[name]
            primitive["extensions"] = {EXTENSION: {"bufferView": len(views) - 1, "attributes": ids}}
            for acc in (*attributes.values(), primitive["indices"]):
                doc["accessors"][acc].pop("bufferView", None)
                doc["accessors"][acc].pop("byteOffset", None)
            # Draco's decoded indices are 32-bit; say so (count is unchanged).
            doc["accessors"][primitive["indices"]]["componentType"] = 5125
    doc["bufferViews"] = views
    if views:
        doc["buffers"] = [{"byteLength": len(out)}]
    else:
        doc.pop("buffers", None)
        doc.pop("bufferViews", None)
    doc["extensionsUsed"] = sorted(set(doc.get("extensionsUsed", [])) | {EXTENSION})
    doc["extensionsRequired"] = sorted(set(doc.get("extensionsRequired", [])) | {EXTENSION})
    body = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    return glb_container(body, bytes(out))  # every Draco block was padded to 4 bytes

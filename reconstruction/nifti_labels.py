"""NIfTI label maps (nibabel), placed on a series' grid by geometry.

Two layouts are read, as segmenters write them:

- one multi-label file whose voxel values are label numbers, named by a label table: a ``labels.json`` or an
  ITK-SNAP label description file beside it, or else the table the file itself carries (TotalSegmentator's
  class names and colours, in a Caret XML extension). Labels without a name are "label N";
- a folder of one-mask-per-structure files (values 0 and 1, no table), as TotalSegmentator writes them by
  default: each file is a structure named after the file (``liver.nii.gz`` -> "liver").

A NIfTI file carries no reference to DICOM images, only its grid: the affine maps voxel indices to RAS
millimetres (LPS with x and y negated). It lies on a series' grid when every voxel centre of the series maps to a
voxel centre of the file within half a voxel and both grids have the same shape (axes may be permuted or
flipped); otherwise it does not fit that series.

Label tables beside the file: ``labels.json`` is either ``{"1": "liver", ...}``, ``{"1": {"name": "liver",
"color": "#rrggbb" or [r, g, b]}, ...}``, or a list (or ``{"labels": [...]}``) of objects with ``label`` (or
``value``), ``name`` and a colour (``color``, or any key starting with "color", as [r, g, b] bytes). An ITK-SNAP
file has one line per label: ``IDX R G B A VIS MSH "NAME"``.
"""

from __future__ import annotations

import gzip
import json
import re
import struct
import xml.etree.ElementTree as ElementTree
import zlib
from collections.abc import Sequence
from pathlib import PurePosixPath

import numpy as np
from scipy import ndimage

from .segmentation import Segmentation, SegmentationError, SegmentationMismatchError
from .sources import FileRef
from .structures import Structure, StructureMask, crop, palette_color
from .volume import Volume

MAX_BYTES = 4 * 1024**3
"""The largest uncompressed NIfTI file read (a 512 x 512 x 2000 int16 map is 1 GiB)."""
_SUFFIXES = (".nii.gz", ".nii")
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
_ITK_SNAP_LINE = re.compile(r'^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+[\d.]+\s+\d+\s+\d+\s+"(.*)"\s*$')


def label_masks(labels: np.ndarray, structures: Sequence[Structure]) -> list[StructureMask]:
    """The StructureMask of each structure (its ``number`` is its label value) in a (k, j, i) label map, each
    cropped to its bounding box. One pass over the map finds every box."""
    boxes = ndimage.find_objects(labels) if labels.size else []
    masks = []
    for structure in structures:
        n = structure.number
        box = boxes[n - 1] if 0 < n <= len(boxes) else None
        if box is None:
            masks.append(StructureMask(structure, (0, 0, 0), np.zeros((0, 0, 0), dtype=bool)))
            continue
        start = tuple(int(s.start) for s in box)
        masks.append(StructureMask(structure, start, labels[box] == n))  # type: ignore[arg-type]
    return masks


def is_nifti(ref: FileRef) -> bool:
    """Whether the file (gzipped or not) starts with a NIfTI-1 or NIfTI-2 header."""
    try:
        with ref.open() as stream:
            head = stream.read(2)
            stream.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=stream) as unzipped:
                    head = unzipped.read(544)
            else:
                head = stream.read(544)
    except (OSError, EOFError, zlib.error):
        return False
    return _header_kind(head) is not None


def _header_kind(head: bytes) -> int | None:
    """1 or 2 for a NIfTI-1 or NIfTI-2 header (either byte order), else None."""
    if len(head) >= 348:
        for order in "<>":
            if struct.unpack_from(f"{order}i", head, 0)[0] == 348 and head[344:347] in (b"n+1", b"ni1"):
                return 1
    if len(head) >= 540:
        for order in "<>":
            if struct.unpack_from(f"{order}i", head, 0)[0] == 540 and head[4:7] in (b"n+2", b"ni2"):
                return 2
    return None


def load_nifti(ref: FileRef):
    """The nibabel image of a NIfTI file (read whole, its size checked before it is inflated). Raises
    SegmentationError."""
    import nibabel as nib

    source = str(ref)
    try:
        raw = ref.read_bytes()
        data = _inflate(raw, source) if raw[:2] == b"\x1f\x8b" else raw
        kind = _header_kind(data[:544])
        image_class = nib.Nifti2Image if kind == 2 else nib.Nifti1Image
        image = image_class.from_bytes(data)
        image.get_fdata  # noqa: B018 (the data is read lazily; its shape and type are checked below)
        if int(np.prod(image.shape)) * image.get_data_dtype().itemsize > len(data):
            raise SegmentationError(source, "the file is shorter than its header declares")
        return image
    except SegmentationError:
        raise
    except Exception as error:  # nibabel raises many kinds on damaged files
        raise SegmentationError(source, f"not a readable NIfTI file ({type(error).__name__}: {error})") from None


def _inflate(raw: bytes, source: str) -> bytes:
    """Gunzip, refusing more than MAX_BYTES."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(raw, MAX_BYTES + 1)
    if len(out) > MAX_BYTES or inflater.unconsumed_tail:
        raise SegmentationError(source, f"it inflates past {MAX_BYTES} bytes")
    return out


def find_label_maps(nifti: Sequence[FileRef], others: Sequence[FileRef]) -> list[Segmentation]:
    """The segmentations of these NIfTI files: each multi-label file on its own (with the label table found
    beside it, among ``others``, or in it), and the one-mask-per-structure files of each folder together."""
    tables = [ref for ref in others if _name(ref).lower().endswith((".json", ".txt", ".label", ".lut"))]
    singles: list[Segmentation] = []
    folders: dict[str, list[tuple[FileRef, object]]] = {}
    for ref in nifti:
        image = load_nifti(ref)
        table = _table_beside(ref, tables) or _embedded_table(image)
        values = np.asarray(image.dataobj)
        if values.ndim == 4 and values.shape[3] == 1:
            values = values[..., 0]
        if values.ndim != 3:
            raise SegmentationError(str(ref), f"a label map needs 3 dimensions, not {values.ndim}")
        if not np.issubdtype(values.dtype, np.integer) and not np.all(np.mod(values, 1) == 0):
            raise SegmentationError(str(ref), "its values are not whole label numbers")
        if table is None and int(values.max(initial=0)) <= 1 and values.min(initial=0) >= 0:
            folders.setdefault(_folder(ref), []).append((ref, image))
            continue
        singles.append(_multi_label(ref, image, values.astype(np.int64, copy=False), table or {}))
    return singles + [_masks_of_folder(members) for members in folders.values()]


def _name(ref: FileRef) -> str:
    return PurePosixPath(ref.member).name if ref.member is not None else ref.path.name


def _folder(ref: FileRef) -> str:
    return f"{ref.path}!{PurePosixPath(ref.member).parent}" if ref.member is not None else str(ref.path.parent)


def _stem(ref: FileRef) -> str:
    name = _name(ref)
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _multi_label(ref: FileRef, image, values: np.ndarray, table: dict[int, tuple[str, tuple[int, int, int] | None]]):
    present = [int(v) for v in np.unique(values) if v > 0]
    structures = []
    for n, value in enumerate(present):
        name, color = table.get(value, (f"label {value}", None))
        structures.append(Structure(value, name, color or palette_color(n)))
    affine = np.asarray(image.affine, dtype=np.float64)

    def place(volume: Volume) -> list[StructureMask]:
        return label_masks(_on_grid(values, affine, volume, str(ref)), structures)

    return Segmentation("NIfTI", str(ref), (ref,), tuple(structures), place)


def _masks_of_folder(members: list[tuple[FileRef, object]]) -> Segmentation:
    members = sorted(members, key=lambda m: _stem(m[0]))
    structures = tuple(Structure(n + 1, _stem(ref), palette_color(n)) for n, (ref, _) in enumerate(members))
    source = _folder(members[0][0])

    def place(volume: Volume) -> list[StructureMask]:
        out = []
        for structure, (ref, image) in zip(structures, members, strict=True):
            values = np.asarray(image.dataobj)  # type: ignore[attr-defined]
            if values.ndim == 4:
                values = values[..., 0]
            labels = _on_grid(values, np.asarray(image.affine, dtype=np.float64), volume, str(ref))  # type: ignore[attr-defined]
            out.append(crop(structure, labels > 0))
        return out

    return Segmentation("NIfTI", source, tuple(ref for ref, _ in members), structures, place)


def _on_grid(values: np.ndarray, affine: np.ndarray, volume: Volume, source: str) -> np.ndarray:
    """``values`` (NIfTI voxel order) resampled onto the volume's (k, j, i) grid, voxel for voxel. Raises
    SegmentationMismatchError unless every voxel centre of the volume is a voxel centre of the file within
    half a voxel, and the two grids have the same shape."""
    slices, rows, columns = volume.shape
    if sorted(values.shape) != sorted(volume.shape):
        raise SegmentationMismatchError(
            source, f"its grid {list(values.shape)} is not the series' {[columns, rows, slices]} (any axis order)")
    inverse = np.linalg.inv(affine)
    to_index = inverse[:3, :3] @ _LPS_FROM_RAS  # LPS offsets -> NIfTI index offsets
    origins = (volume.positions @ _LPS_FROM_RAS.T) @ inverse[:3, :3].T + inverse[:3, 3]  # (slices, 3)
    down = to_index @ (np.asarray(volume.column_direction) * volume.pixel_spacing[0])
    across = to_index @ (np.asarray(volume.row_direction) * volume.pixel_spacing[1])
    steps = [np.round(v) for v in (down, across)]
    worst = max(float(np.abs(down - steps[0]).max()) * (rows - 1),
                float(np.abs(across - steps[1]).max()) * (columns - 1),
                float(np.abs(origins - np.round(origins)).max()))
    if worst >= 0.5 or any(np.abs(s).sum() != 1 for s in steps):
        raise SegmentationMismatchError(source, "its voxel centres are not the series' (its affine does not match "
                                                "the slices' positions and orientation within half a voxel)")
    start = np.round(origins).astype(np.int64)
    down_axis, across_axis = (int(np.flatnonzero(s)[0]) for s in steps)
    down_sign, across_sign = (int(s[a]) for s, a in zip(steps, (down_axis, across_axis), strict=True))
    through = 3 - down_axis - across_axis
    j, i = np.arange(rows), np.arange(columns)
    out = np.empty(volume.shape, dtype=values.dtype)
    for k in range(slices):
        index = [None, None, None]
        index[down_axis] = start[k, down_axis] + down_sign * j
        index[across_axis] = start[k, across_axis] + across_sign * i
        index[through] = start[k, through]
        if not all(np.min(ix) >= 0 and np.max(ix) < values.shape[a] for a, ix in enumerate(index)):
            raise SegmentationMismatchError(source, f"slice {k} of the series lies outside its grid")
        plane = values.take(int(index[through]), axis=through)  # the two other axes, in order
        rows_first = down_axis < across_axis
        picked = plane[np.ix_(index[down_axis], index[across_axis])] if rows_first \
            else plane[np.ix_(index[across_axis], index[down_axis])].T
        out[k] = picked
    return out


def _table_beside(ref: FileRef, tables: Sequence[FileRef]) -> dict | None:
    """The label table in the same folder as ``ref`` (a labels.json or an ITK-SNAP file), or None."""
    for table in tables:
        if _folder(table) != _folder(ref):
            continue
        parsed = parse_label_table(table.read_bytes(), _name(table))
        if parsed:
            return parsed
    return None


def parse_label_table(data: bytes, name: str) -> dict[int, tuple[str, tuple[int, int, int] | None]]:
    """label value -> (name, sRGB or None) from a labels.json or an ITK-SNAP label file; {} if it is neither."""
    text = data.decode("utf-8", "replace")
    if name.lower().endswith(".json"):
        try:
            return _json_table(json.loads(text))
        except (ValueError, TypeError, KeyError):
            return {}
    table = {}
    for line in text.splitlines():
        match = _ITK_SNAP_LINE.match(line)
        if match and int(match.group(1)) > 0:
            r, g, b = (int(match.group(n)) for n in (2, 3, 4))
            table[int(match.group(1))] = (match.group(5), (r, g, b))
    return table


def _json_table(doc) -> dict[int, tuple[str, tuple[int, int, int] | None]]:
    if isinstance(doc, dict) and isinstance(doc.get("labels"), list):
        doc = doc["labels"]
    table = {}
    if isinstance(doc, dict):
        for key, value in doc.items():
            if isinstance(value, str):
                table[int(key)] = (value, None)
            elif isinstance(value, dict):
                table[int(key)] = (str(value["name"]), _json_color(value))
    elif isinstance(doc, list):
        for item in doc:
            value = item.get("label", item.get("value"))
            table[int(value)] = (str(item["name"]), _json_color(item))
    return {k: v for k, v in table.items() if k > 0}


def _json_color(item: dict) -> tuple[int, int, int] | None:
    for key, value in item.items():
        if not key.lower().startswith("color"):
            continue
        if isinstance(value, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", value):
            return tuple(int(value[n:n + 2], 16) for n in (1, 3, 5))  # type: ignore[return-value]
        if isinstance(value, list) and len(value) >= 3:
            return tuple(round(float(c)) for c in value[:3])  # type: ignore[return-value]
    return None


def _embedded_table(image) -> dict[int, tuple[str, tuple[int, int, int] | None]] | None:
    """The label table of a Caret XML extension (TotalSegmentator writes one), or None."""
    for extension in image.header.extensions:
        content = extension.get_content()
        if not isinstance(content, bytes | str) or b"LabelTable" not in (
                content if isinstance(content, bytes) else content.encode()):
            continue
        try:
            root = ElementTree.fromstring(content)
        except ElementTree.ParseError:
            continue
        table = {}
        for label in root.iter("Label"):
            key = int(label.get("Key", "0"))
            rgb = tuple(round(float(label.get(c, "0")) * 255) for c in ("Red", "Green", "Blue"))
            if key > 0:
                table[key] = ((label.text or f"label {key}").strip(), rgb)
        if table:
            return table  # type: ignore[return-value]
    return None

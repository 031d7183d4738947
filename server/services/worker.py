"""The reconstruction job body, run in a worker process.

It reads the series from the study's stored instances, builds one mesh per preset, and writes each mesh's
artifacts (full GLB, coarse level of detail, Draco-compressed GLB) into the content-addressed store. Messages
to the parent go through a pipe: ("progress", {...}), ("mesh", {...}), ("error", text), ("done", None).
Nothing here touches the catalog: the parent owns it.
"""

from __future__ import annotations

import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

# Overall percent at the start of each stage; meshing spreads over the presets.
STAGE_SPAN = {"reading": (0, 10), "decoding": (10, 30), "growing": (30, 45), "meshing": (45, 90),
              "writing": (90, 100)}


class _Reporter:
    """Turns the pipeline's (stage, done, total) into throttled percent messages."""

    def __init__(self, conn: Connection, n_presets: int) -> None:
        self.conn = conn
        self.n_presets = max(1, n_presets)
        self.preset_index = 0
        self._last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == "meshing":  # build_meshes says ("meshing", n, presets) before preset n
            self.preset_index = min(done, self.n_presets - 1)
        lo, hi = STAGE_SPAN.get(stage, STAGE_SPAN["meshing"])
        frac = min(1.0, done / total) if total else 0.0
        if stage not in STAGE_SPAN:  # sub-stages of one preset (decimating, smoothing...)
            width = (hi - lo) / self.n_presets
            lo = lo + width * self.preset_index
            hi = lo + width
        now = time.monotonic()
        if now - self._last < 0.1 and frac < 1.0:
            return
        self._last = now
        self.conn.send(("progress", {"stage": stage, "percent": round(lo + (hi - lo) * frac, 1)}))


def run_job(spec: dict, conn: Connection) -> None:
    """Entry point of the worker process. Requires spec keys: inputs, series_uid, presets, threshold,
    target_triangles, allow_gaps, artifacts_root, mesh_ids (preset -> id)."""
    try:
        _run(spec, conn)
        conn.send(("done", None))
    except Exception as e:  # reported to the parent, which marks the job failed
        from reconstruction.errors import ReconstructionError
        from server.storage.errors import CorruptStoreError

        plain = isinstance(e, ReconstructionError | CorruptStoreError)
        text = str(e) if plain else f"internal error: {type(e).__name__}: {e}"
        try:
            conn.send(("error", text))
            conn.send(("done", None))
        except OSError:
            pass
    finally:
        conn.close()


def _run(spec: dict, conn: Connection) -> None:
    kind = spec.get("kind")
    if kind == "structures":
        return _run_structures(spec, conn)
    if kind == "grow":
        return _run_grow(spec, conn)
    return _run_presets(spec, conn)


def _structure_rows(meshes) -> list[dict]:
    return [{"number": int(m.extras["structure"]), "name": m.name, "color": m.extras["color"],
             "code": m.extras["code"], "volume_ml": m.extras["volume_ml"]} for m in meshes]


def _send_mesh(conn: Connection, store, mesh_id: str, preset: str, meshes, volume, **extra) -> None:
    """Store the GLB artifacts of ``meshes`` (one file) and tell the parent."""
    from reconstruction.delivery import mesh_artifacts

    blobs = mesh_artifacts(meshes, volume)
    artifacts = {kind: store.put_bytes(data, ".glb") for kind, data in blobs.items()}
    vertices = [m.vertices for m in meshes if len(m.vertices)]
    stacked = np.concatenate(vertices) if vertices else np.zeros((1, 3))
    conn.send(("mesh", {
        "id": mesh_id, "preset": preset, "threshold": 0.5, "triangles": sum(m.triangles for m in meshes),
        "vertices": sum(len(m.vertices) for m in meshes),
        "bbox_lps_mm": [stacked.min(axis=0).tolist(), stacked.max(axis=0).tolist()],
        "artifacts": artifacts, **extra,
    }))


def _run_structures(spec: dict, conn: Connection) -> None:
    """Mesh a segmentation's stored masks: one GLB, one node per structure."""
    from reconstruction.structure_surface import structure_meshes
    from reconstruction.structures import Structure, read_masks_npz
    from server.storage.artifacts import ArtifactStore

    store = ArtifactStore(Path(spec["artifacts_root"]))
    path = store.verified_path(spec["masks_digest"], ".npz")
    structures = [Structure(int(s["number"]), s["name"], _rgb(s["color"]), s["code"]) for s in spec["structures"]]
    grid, masks = read_masks_npz(path.read_bytes(), structures)
    report = _Reporter(conn, 1)
    meshes = structure_meshes(grid, masks, target_triangles=spec["target_triangles"], progress=report)
    report("writing", 0, 1)
    _send_mesh(conn, store, spec["mesh_ids"]["structures"], "structures", meshes, grid,
               segmentation_id=spec["segmentation_id"])
    report("writing", 1, 1)


def _run_grow(spec: dict, conn: Connection) -> None:
    """Grow a structure from a seed in the series' volume, mesh it, keep its mask (a DICOM SEG and the masks)."""
    import hashlib

    from reconstruction.growing import SKIN_SHARE, GrowError, grow_region, skin_share
    from reconstruction.pipeline import load_volume
    from reconstruction.presets import level_for, presets_for
    from reconstruction.structure_surface import structure_meshes
    from reconstruction.structures import masks_npz
    from server.storage.artifacts import ArtifactStore

    store = ArtifactStore(Path(spec["artifacts_root"]))
    for path in map(Path, spec["inputs"]):
        store.verified_path(path.stem, path.suffix)
    report = _Reporter(conn, 1)
    _scan, series, volume, _ = load_volume([Path(p) for p in spec["inputs"]], series_uid=spec["series_uid"],
                                           allow_gaps=True, progress=report)
    report("growing", 0, 1)
    mask, band = grow_region(volume, spec["seed"], name=spec["name"], color=_rgb(spec["color"]), low=spec["low"],
                             high=spec["high"], max_radius_mm=spec["max_radius_mm"])
    skin = presets_for(volume.modality).get("skin")
    if spec.get("training") and skin is not None and \
            skin_share(volume, mask, level_for(skin, volume)) > SKIN_SHARE:
        raise GrowError("seed", "this structure outlines the body's surface, which can show the patient's face: "
                                "training rooms take de-identified data only (narrow the band)")
    report("growing", 1, 1)
    (mesh,) = structure_meshes(volume, [mask], target_triangles=spec["target_triangles"], progress=report)
    files = []
    try:
        seg = _grown_seg(mask, volume, series)
        files.append({"digest": store.put_bytes(seg, ".dcm"), "suffix": ".dcm"})
    except Exception as error:  # highdicom cannot reference every kind of source image: the masks remain
        conn.send(("progress", {"stage": f"no DICOM SEG kept ({type(error).__name__})", "percent": 95.0}))
    masks = store.put_bytes(masks_npz(volume, [mask]), ".npz")
    segmentation = {"id": "sg" + hashlib.sha256(masks.encode()).hexdigest()[:22], "format": "grown",
                    "files": files, "masks": masks, "structures": _structure_rows([mesh]),
                    "band": [band.low, band.high], "preset": band.preset}
    report("writing", 0, 1)
    _send_mesh(conn, store, spec["mesh_ids"]["structure"], "structures", [mesh], volume,
               segmentation_id=segmentation["id"], segmentation=segmentation)
    report("writing", 1, 1)


def _grown_seg(mask, volume, series) -> bytes:
    """The grown mask as a DICOM SEG referencing the series' images (one single-frame image per slice)."""
    import pydicom

    from reconstruction.dicom_seg import write_seg

    normal = volume.normal
    datasets = sorted((pydicom.dcmread(str(i.ref.path)) for i in series.instances),
                      key=lambda ds: float(np.asarray(ds.ImagePositionPatient, float) @ normal))
    if len(datasets) != volume.shape[0]:
        raise ValueError("the series' images are not one per slice")
    return write_seg(mask, volume, datasets)


def _rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[n:n + 2], 16) for n in (1, 3, 5))  # type: ignore[return-value]


def _run_presets(spec: dict, conn: Connection) -> None:
    from reconstruction.delivery import mesh_artifacts
    from reconstruction.pipeline import build_meshes, load_volume
    from server.storage.artifacts import ArtifactStore

    presets = list(spec["presets"])
    report = _Reporter(conn, len(presets))
    store = ArtifactStore(Path(spec["artifacts_root"]))
    for path in map(Path, spec["inputs"]):  # mesh only what the study really holds
        store.verified_path(path.stem, path.suffix)
    _scan, _series, volume, _seconds = load_volume(
        [Path(p) for p in spec["inputs"]],
        series_uid=spec["series_uid"],
        allow_gaps=spec["allow_gaps"],
        progress=report,
    )
    meshes = build_meshes(volume, presets, threshold=spec["threshold"], target_triangles=spec["target_triangles"],
                          largest_only=spec.get("largest_only", False), slice_smoothing=spec.get("slice_smoothing"),
                          progress=report)
    for n, (name, mesh) in enumerate(zip(presets, meshes, strict=True)):
        report("writing", n, len(presets))
        blobs = mesh_artifacts(mesh, volume, title=spec.get("title", ""))
        artifacts = {kind: store.put_bytes(data, ".glb") for kind, data in blobs.items()}
        conn.send(("mesh", {
            "id": spec["mesh_ids"][name],
            "preset": name,
            "threshold": mesh.threshold,
            "triangles": mesh.triangles,
            "vertices": len(mesh.vertices),
            "bbox_lps_mm": mesh.bbox_lps_mm(),
            "artifacts": artifacts,
        }))
    report("writing", len(presets), len(presets))

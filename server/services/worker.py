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

# Overall percent at the start of each stage; meshing spreads over the presets.
STAGE_SPAN = {"reading": (0, 10), "decoding": (10, 30), "meshing": (30, 90), "writing": (90, 100)}


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

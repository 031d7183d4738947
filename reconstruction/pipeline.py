"""The reconstruction pipeline: DICOM inputs -> one series -> Volume -> one Mesh per preset -> GLB on disk.

This composes the single-concept modules (sources/series, assembly, surface, gltf) and times each stage.
`reconstruct` is the whole pipeline, as the CLI runs it. The server's jobs run its two halves, `load_volume`
and `build_meshes`, and deliver each mesh as it comes (``delivery``) instead of writing one GLB.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .assembly import assemble_volume
from .deflate import DEFAULT_MAX_INFLATED_BYTES
from .errors import NoVolumeError
from .gltf import write_glb
from .mesh import Mesh
from .pixels import DEFAULT_MAX_VOXELS
from .presets import preset_names_for
from .progress import Progress, no_progress
from .series import Scan, Series, find_series, pick_series
from .surface import DEFAULT_TARGET_TRIANGLES, extract_surface
from .volume import Volume


@dataclass(frozen=True, eq=False)
class Reconstruction:
    """What one run produced: the scan, the chosen series, its volume, the meshes, and the GLB written."""

    scan: Scan
    series: Series
    volume: Volume
    meshes: tuple[Mesh, ...]
    out: Path
    bytes: int
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        """The de-identified JSON summary the CLI prints with --json (no UIDs, no patient data)."""
        v = self.volume
        return {
            "series": {
                "description": v.description,
                "modality": v.modality,
                "slices": v.shape[0],
                "shape": list(v.shape),
                "spacing_mm": [round(s, 6) for s in v.spacing_mm],
                "warnings": list(v.warnings),
            },
            "meshes": [
                {
                    "preset": m.preset,
                    "threshold": m.threshold,
                    "triangles": m.triangles,
                    "vertices": len(m.vertices),
                    "bbox_lps_mm": m.bbox_lps_mm(),
                }
                for m in self.meshes
            ],
            "out": str(self.out),
            "bytes": self.bytes,
            "seconds": {k: round(s, 4) for k, s in self.seconds.items()},
            "software_version": __version__,
        }


class _Clock:
    """Accumulates wall time per stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + (now - self._t)
        self._t = now


class _DecimationTimer:
    """Passes progress through and times the "decimating" stage, which runs inside surface extraction."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.seconds = 0.0
        self._start: float | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == "decimating":
            now = time.perf_counter()
            if done == 0:
                self._start = now
            elif done >= total and self._start is not None:
                self.seconds += now - self._start
                self._start = None
        self.progress(stage, done, total)


def load_volume(
    inputs: Sequence[str | Path],
    *,
    series_uid: str | None = None,
    allow_gaps: bool = False,
    progress: Progress | None = None,
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
    max_voxels: int = DEFAULT_MAX_VOXELS,
) -> tuple[Scan, Series, Volume, dict[str, float]]:
    """Find the series in ``inputs``, pick one (``series_uid`` or the best 3D one) and assemble its Volume.

    ``max_inflated_bytes`` as for `find_series`, ``max_voxels`` as for `assemble_volume`.
    """
    progress = progress or no_progress
    clock = _Clock()
    scan = find_series(inputs, progress=progress, max_inflated_bytes=max_inflated_bytes)
    try:
        series = pick_series(scan, series_uid)
    except NoVolumeError as e:
        if e.source != "inputs":
            raise
        raise NoVolumeError(", ".join(str(p) for p in inputs), e.problem) from None
    clock.lap("reading")
    volume = assemble_volume(series, allow_gaps=allow_gaps, progress=progress, max_voxels=max_voxels)
    clock.lap("decoding")
    return scan, series, volume, clock.seconds


def build_meshes(
    volume: Volume,
    presets: Sequence[str],
    *,
    threshold: float | None = None,
    target_triangles: int = DEFAULT_TARGET_TRIANGLES,
    largest_only: bool = False,
    slice_smoothing: bool | None = None,
    progress: Progress | None = None,
) -> Iterator[Mesh]:
    """The surface of each preset (by name, for the volume's modality), in order, each as soon as it is made.

    ``largest_only`` keeps only the largest connected surface of each (the skull without the head holder);
    otherwise each preset keeps what it keeps. ``slice_smoothing`` as for `extract_surface` (None: when the
    slices are thick). Reports ("meshing", n, len(presets)) before preset n and ("meshing", len(presets),
    len(presets)) after the last; the surface's own stages ("decimating") in between. Raises SurfaceError as
    `extract_surface`.
    """
    progress = progress or no_progress
    for n, name in enumerate(presets):
        progress("meshing", n, len(presets))
        yield extract_surface(
            volume,
            name,
            threshold=threshold,
            target_triangles=target_triangles,
            keep_largest=1 if largest_only else "preset",
            slice_smoothing=slice_smoothing,
            progress=progress,
        )
    progress("meshing", len(presets), len(presets))


def reconstruct(
    inputs: Sequence[str | Path],
    *,
    out: Path,
    series_uid: str | None = None,
    presets: Sequence[str] | None = None,
    threshold: float | None = None,
    target_triangles: int = DEFAULT_TARGET_TRIANGLES,
    largest_only: bool = False,
    slice_smoothing: bool | None = None,
    allow_gaps: bool = False,
    title: str = "",
    progress: Progress | None = None,
) -> Reconstruction:
    """Run the whole pipeline and write the GLB atomically to ``out``.

    Requires target_triangles > 0. ``presets`` defaults to the modality's default preset list;
    ``largest_only`` and ``slice_smoothing`` as for `build_meshes`.
    """
    if target_triangles <= 0:
        raise ValueError("target_triangles must be positive")
    progress = progress or no_progress
    scan, series, volume, seconds = load_volume(
        inputs, series_uid=series_uid, allow_gaps=allow_gaps, progress=progress
    )
    names = list(presets) if presets else preset_names_for(volume.modality)
    t0 = time.perf_counter()
    timed = _DecimationTimer(progress)
    meshes = list(
        build_meshes(
            volume,
            names,
            threshold=threshold,
            target_triangles=target_triangles,
            largest_only=largest_only,
            slice_smoothing=slice_smoothing,
            progress=timed,
        )
    )
    seconds["meshing"] = time.perf_counter() - t0 - timed.seconds
    seconds["decimating"] = timed.seconds
    t0 = time.perf_counter()
    progress("writing", 0, 1)
    extras = {"title": title} if title else {}
    size = write_glb(out, meshes, volume=volume, extras=extras)
    progress("writing", 1, 1)
    seconds["writing"] = time.perf_counter() - t0
    return Reconstruction(scan, series, volume, tuple(meshes), Path(out), size, seconds)

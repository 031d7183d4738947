"""Slices: the images of a room's series on oblique planes (server/api/slices.py serves them).

A room's series (by default the one its meshes were built from) is decoded once into the volume cache
(server/services/volumes.py), keyed by its content address, so a request is one reslice
(reconstruction/reslice.py) and, for a PNG, one window (reconstruction/windows.py) and one encode, in a thread
off the event loop. What a request may name is the room's study only: a series of another study is not found.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from reconstruction.errors import ReconstructionError
from reconstruction.pipeline import load_volume
from reconstruction.reslice import Plane, air_value, reslice
from reconstruction.volume import Volume
from reconstruction.windows import Window, to_grey, windows_for
from server.services.errors import Conflict, NotFound
from server.services.imports import instance_paths
from server.services.volumes import VolumeCache
from server.storage.artifacts import ArtifactStore
from server.storage.catalog import Catalog

FORMATS = ("png", "hu")
PNG_COMPRESS_LEVEL = 1  # a 512 x 512 slice: about a third the time of the default level, a few % larger


@dataclass(frozen=True, eq=False)
class LoadedSeries:
    """A decoded series with what every slice of it needs: its window presets (the first is the default) and
    the value outside it."""

    volume: Volume
    windows: tuple[Window, ...]
    air: float

    @property
    def nbytes(self) -> int:
        return int(self.volume.voxels.nbytes)


@dataclass(frozen=True)
class SliceImage:
    """An encoded slice: `body` of `content_type`, `rows` x `columns` pixels, through `window` (PNG only)."""

    body: bytes
    content_type: str
    rows: int
    columns: int
    window: Window | None


def load_series(inputs: list[str], series_uid: str | None = None) -> LoadedSeries:
    """Decode the series `series_uid` (None: the best 3D series) among the files `inputs`, with its presets.
    Raises ReconstructionError.

    Gaps are allowed: a slice across one interpolates between the slices either side, as the surgeon expects
    of an image that has them (a mesh refuses them unless asked).
    """
    _, _, volume, _ = load_volume(inputs, series_uid=series_uid, allow_gaps=True)
    return LoadedSeries(volume, windows_for(volume), air_value(volume))


def render(loaded: LoadedSeries, plane: Plane, window: Window | None, fmt: str) -> SliceImage:
    """The slice of `loaded` on `plane`: a windowed 8-bit grey PNG, or ("hu") little-endian int16 values
    (rounded, clipped to int16). Requires `window` for a PNG."""
    image = reslice(loaded.volume, plane, air=loaded.air)
    if fmt == "hu":
        values = np.clip(np.rint(image), -32768, 32767).astype("<i2")
        return SliceImage(values.tobytes(), "application/octet-stream", plane.rows, plane.columns, None)
    assert window is not None
    out = io.BytesIO()
    Image.fromarray(to_grey(image, window.width, window.level), mode="L").save(
        out, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return SliceImage(out.getvalue(), "image/png", plane.rows, plane.columns, window)


class SliceService:
    """Slices of the library's series, through one volume cache."""

    def __init__(self, catalog: Catalog, store: ArtifactStore, cache: VolumeCache[LoadedSeries]):
        self.catalog = catalog
        self.store = store
        self.cache = cache

    def series_for(self, study_id: str, mesh_ids: list[str], series_id: str | None = None) -> dict:
        """The catalog series a room of `study_id` over `mesh_ids` slices: `series_id` if it is one of the
        study's, else the series of the room's first mesh. Raises NotFound."""
        if series_id is not None:
            series = self.catalog.series(series_id)
            if series is None or series["study_id"] != study_id:
                raise NotFound("not_found", f"no series {series_id!r} in this room's study")
            return series
        for mesh_id in mesh_ids:
            mesh = self.catalog.mesh(mesh_id)
            series = self.catalog.series(mesh["series_id"]) if mesh else None
            if series is not None:
                return series
        raise NotFound("not_found", "the series of this room's meshes is no longer in the library")

    async def load(self, series: dict) -> LoadedSeries:
        """The decoded series (from the cache, or decoded now). Raises Conflict if its files cannot be read."""
        inputs = instance_paths(self.catalog, self.store, series["study_id"])
        try:
            return await self.cache.get(series["input_hash"], lambda: load_series(inputs, series["uid"]))
        except ReconstructionError as e:
            raise Conflict("unreadable_series", f"series {series['id']} cannot be read: {e.problem}") from None

    async def info(self, series: dict) -> dict:
        """What a client needs to place planes in the series: its geometry in LPS mm and its presets."""
        loaded = await self.load(series)
        volume = loaded.volume
        bounds = volume.bbox_lps_mm()
        return {
            "series": series["id"],
            "modality": volume.modality,
            "units": volume.units,
            "shape": list(volume.shape),
            "spacing_mm": [round(s, 6) for s in volume.spacing_mm],
            "bounds_lps_mm": bounds.round(4).tolist(),
            "centre_lps_mm": bounds.mean(axis=0).round(4).tolist(),
            "row_direction": volume.row_direction.round(6).tolist(),
            "column_direction": volume.column_direction.round(6).tolist(),
            "normal": volume.normal.round(6).tolist(),
            "air": loaded.air,
            "windows": [w.to_json() for w in loaded.windows],
        }

    async def image(self, series: dict, plane: Plane, fmt: str, width: float | None = None,
                    level: float | None = None) -> SliceImage:
        """The slice of `series` on `plane` in format `fmt` ("png" or "hu"); a missing `width` or `level` is
        the default preset's. Requires a format of FORMATS and width > 0 if given."""
        loaded = await self.load(series)
        default = loaded.windows[0]
        window = Window("custom", default.width if width is None else width, default.level if level is None else level)
        return await asyncio.to_thread(render, loaded, plane, window, fmt)

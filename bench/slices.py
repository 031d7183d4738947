"""Benchmark: a 512x512 slice of a 512x512x300 CT, with its PNG, warm and cold, against VTK in the same run.

The series is the synthetic head phantom that bench/reconstruct.py uses (written once into bench/out/). Every
row makes the SAME 512 x 512 image of the SAME plane through the SAME voxels and encodes it with the SAME
PNG encoder (Pillow, the server's compression level), so the ratio compares the reslicing alone plus a fixed
encode:

- ``ours``: what the server runs per request, in its worker thread (`server.services.slices.render`): the
  trilinear reslice through each slice's true position, the bone window, the PNG. "HTTP" rows are a real
  `GET /api/rooms/{id}/slice` of the in-process server on loopback, the client's wait, end to end.
- ``VTK``: `vtkImageReslice` (linear interpolation, the image data on its median slice spacing, VTK's own
  threads) on the volume already in memory, then the same window and PNG. It is the reference a visualisation
  engineer would reach for; it assumes an evenly spaced, untilted stack, which this phantom is, so both make
  the same pixels (the "max |diff|" column, in HU, before the window).
- cold: ours is the first request of a series not in the volume cache (reading and decoding the 300 files,
  then the slice); the reference reads the same files with a plain pydicom loop (bench/reconstruct.py's), builds
  the vtkImageData and reslices.

Warm figures are the median of `--repeat` runs (the best in brackets); the target is a median of 30 ms or less
for a 512 x 512 slice with its PNG. Usage: ``python bench/slices.py [--repeat 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from reconstruction.reslice import Plane, reslice  # noqa: E402
from reconstruction.windows import CT_WINDOWS, to_grey  # noqa: E402
from server.services.slices import PNG_COMPRESS_LEVEL, load_series, render  # noqa: E402

PX = 512
COARSE_PX = 128
TARGET_MS = 30.0
BONE = CT_WINDOWS[0]


def _sibling(name: str):
    """bench/<name>.py as a module (its phantom parameters and its pydicom loop)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def planes(bounds: np.ndarray) -> dict[str, Plane]:
    """An axial plane through the middle of the head, and an oblique one tilted 30 and 20 degrees."""
    centre = bounds.mean(axis=0)
    size = float(np.max(bounds[1, :2] - bounds[0, :2]))
    a, b = np.radians(30), np.radians(20)
    u = np.array([np.cos(b), 0.0, np.sin(b)])
    v = np.array([-np.sin(a) * np.sin(b), np.cos(a), np.sin(a) * np.cos(b)])
    v -= (v @ u) * u
    return {
        "axial": Plane.checked(centre, (1, 0, 0), (0, 1, 0), size, size, PX),
        "oblique": Plane.checked(centre, u, v / np.linalg.norm(v), size, size, PX),
    }


def timed(function, repeat: int) -> tuple[float, float, object]:
    """(median ms, best ms, last result) of `repeat` calls."""
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = function()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), min(times), result


def png(grey: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(grey, mode="L").save(out, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return out.getvalue()


# -- the VTK reference ---------------------------------------------------------------------------------------
def vtk_image(voxels: np.ndarray, positions: np.ndarray, spacing: tuple[float, float]):
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData

    image = vtkImageData()
    n, rows, columns = voxels.shape
    image.SetDimensions(columns, rows, n)
    image.SetSpacing(spacing[1], spacing[0], float(np.median(np.diff(positions[:, 2]))))
    image.SetOrigin(*positions[0])
    image.GetPointData().SetScalars(numpy_to_vtk(voxels.reshape(-1), deep=False))
    return image


class VtkReslice:
    """vtkImageReslice of one image on a Plane: linear, output pixel centres where ours are, air outside."""

    def __init__(self, image):
        from vtkmodules.vtkImagingCore import vtkImageReslice

        self.reslice = vtkImageReslice()
        self.reslice.SetInputData(image)
        self.reslice.SetInterpolationModeToLinear()
        self.reslice.SetOutputDimensionality(2)
        self.reslice.SetBackgroundLevel(-1024)

    def __call__(self, plane: Plane) -> np.ndarray:
        from vtkmodules.util.numpy_support import vtk_to_numpy
        from vtkmodules.vtkCommonMath import vtkMatrix4x4

        axes = vtkMatrix4x4()
        normal = plane.normal
        for row in range(3):
            for column, vector in enumerate((plane.u, plane.v, normal, plane.origin)):
                axes.SetElement(row, column, float(vector[row]))
        self.reslice.SetResliceAxes(axes)
        dx, dy = plane.width_mm / plane.columns, plane.height_mm / plane.rows
        self.reslice.SetOutputSpacing(dx, dy, 1.0)
        self.reslice.SetOutputOrigin(-plane.width_mm / 2 + dx / 2, -plane.height_mm / 2 + dy / 2, 0.0)
        self.reslice.SetOutputExtent(0, plane.columns - 1, 0, plane.rows - 1, 0, 0)
        self.reslice.Modified()
        self.reslice.Update()
        output = self.reslice.GetOutput()
        return vtk_to_numpy(output.GetPointData().GetScalars()).reshape(plane.rows, plane.columns)


def vtk_png(reslicer: VtkReslice, plane: Plane) -> bytes:
    return png(to_grey(reslicer(plane).astype(np.float32), BONE.width, BONE.level))


# -- the server over HTTP --------------------------------------------------------------------------------------
async def http_rows(folder: Path, plane_set: dict[str, Plane], repeat: int) -> dict[str, tuple[float, float]]:
    """Cold and warm GET /api/rooms/{id}/slice of a real server in this process: {case: (median, best) ms}."""
    import aiohttp
    from aiohttp import web

    from server.app import build_app
    from server.appkeys import ADMIN_TOKEN, CATALOG, LIBRARY
    from server.config import Settings
    from server.services.imports import import_folder

    with tempfile.TemporaryDirectory() as data:
        app = build_app(Settings(data=Path(data), workers=1))
        imported = await asyncio.to_thread(import_folder, app[LIBRARY], folder)
        study, series = imported["study_id"], imported["series"][0]["id"]
        app[CATALOG].add_mesh({"id": "m-bench", "study_id": study, "series_id": series, "preset": "bone",
                               "threshold": 300.5, "triangles": 1, "vertices": 3,
                               "bbox_lps_mm": [[0, 0, 0], [1, 1, 1]], "artifacts": {}})
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        headers = {"Authorization": f"Bearer {app[ADMIN_TOKEN]}"}
        rows: dict[str, tuple[float, float]] = {}
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=headers) as http:
                created = await http.post("/api/rooms", json={"study_id": study, "mesh_ids": ["m-bench"],
                                                              "mode": "consult", "title": "bench"})
                room = (await created.json())["room"]["id"]

                async def get(plane: Plane, px: int) -> float:
                    query = {"origin": ",".join(map(repr, plane.origin)), "u": ",".join(map(repr, plane.u)),
                             "v": ",".join(map(repr, plane.v)), "width_mm": repr(plane.width_mm),
                             "height_mm": repr(plane.height_mm), "px": str(px), "window": "1800", "level": "400"}
                    t = time.perf_counter()
                    async with http.get(f"/api/rooms/{room}/slice", params=query) as r:
                        assert r.status == 200, await r.text()
                        await r.read()
                    return (time.perf_counter() - t) * 1000

                cold = await get(plane_set["oblique"], PX)
                rows["cold"] = (cold, cold)
                for name, plane in plane_set.items():
                    for px in (PX, COARSE_PX):
                        await get(plane, px)
                        times = [await get(plane, px) for _ in range(repeat)]
                        rows[f"{name} {px}"] = (statistics.median(times), min(times))
        finally:
            await runner.cleanup()
            app[CATALOG].close()
        return rows


# -- the table ----------------------------------------------------------------------------------------------------
def row(case: str, ours: tuple[float, float] | None, reference: tuple[float, float] | None, diff: str = "") -> str:
    def cell(value: tuple[float, float] | None) -> str:
        return f"{value[0]:8.1f} ({value[1]:6.1f})" if value else f"{'-':>17}"

    ratio = f"{ours[0] / reference[0]:6.2f}" if ours and reference else f"{'-':>6}"
    return f"{case:<34} {cell(ours)} {cell(reference)} {ratio}  {diff}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=30, help="runs of each warm case (the median counts)")
    args = parser.parse_args(argv)

    reconstruct = _sibling("reconstruct")
    phantom = reconstruct._load_phantom()
    params = phantom.PhantomParameters(shape=reconstruct.SHAPE, pixel_spacing=reconstruct.PIXEL_SPACING,
                                       slice_spacing=reconstruct.SLICE_SPACING)
    reconstruct.OUT.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    series = phantom.write_phantom(reconstruct.OUT / "phantom-{}x{}x{}".format(*reconstruct.SHAPE), params)
    print(f"{'wrote' if series.written else 'reused'} the phantom series {series.folder} "
          f"({len(series.files)} files) in {time.perf_counter() - t:.1f} s")
    try:
        import vtkmodules  # noqa: F401
        have_vtk = True
    except ImportError:
        print("VTK is not installed (pip install -e '.[bench]'): the reference columns stay empty")
        have_vtk = False

    # Cold: decode the series from its files, then the first slice.
    t = time.perf_counter()
    loaded = load_series([str(series.folder)])
    plane_set = planes(loaded.volume.bbox_lps_mm())
    render(loaded, plane_set["oblique"], BONE, "png")
    ours_cold = (time.perf_counter() - t) * 1000
    volume = loaded.volume
    reference_cold = reslicer = None
    if have_vtk:
        t = time.perf_counter()
        voxels, positions, _, spacing = reconstruct.read_with_pydicom(series.folder, reconstruct.Stages())
        reslicer = VtkReslice(vtk_image(voxels, positions, spacing))
        vtk_png(reslicer, plane_set["oblique"])
        reference_cold = (time.perf_counter() - t) * 1000
        del voxels
        reslicer = VtkReslice(vtk_image(volume.voxels, volume.positions, volume.pixel_spacing))

    lines = []
    for name, plane in plane_set.items():
        for px in (PX, COARSE_PX):
            sized = Plane.checked(plane.origin, plane.u, plane.v, plane.width_mm, plane.height_mm, px)
            render(loaded, sized, BONE, "png")  # first touch of the pages
            median, best, _ = timed(lambda p=sized: render(loaded, p, BONE, "png"), args.repeat)
            ours = (median, best)
            reference = diff = None
            if reslicer is not None:
                vtk_png(reslicer, sized)
                median, best, _ = timed(lambda p=sized: vtk_png(reslicer, p), args.repeat)
                reference = (median, best)
                inside = reslice(loaded.volume, sized) != -1024
                diff = float(np.abs(reslice(loaded.volume, sized) - reslicer(sized))[inside].max())
            lines.append((f"warm {name} {px}x{px} + PNG", ours, reference,
                          f"{diff:.3g}" if diff is not None else ""))
        median, best, _ = timed(lambda p=plane: reslice(loaded.volume, p), args.repeat)
        vtk_alone = None
        if reslicer is not None:
            m, b, _ = timed(lambda p=plane: reslicer(p), args.repeat)
            vtk_alone = (m, b)
        lines.append((f"  {name} reslice alone, no PNG", (median, best), vtk_alone, ""))
    http = asyncio.run(http_rows(series.folder, plane_set, args.repeat))

    print()
    print(f"{volume.shape[2]}x{volume.shape[1]}x{volume.shape[0]} CT ({volume.voxels.nbytes / 2**20:.0f} MiB int16), "
          f"bone window, PNG level {PNG_COMPRESS_LEVEL}; ms: median (best) of {args.repeat}; {os.cpu_count()} CPUs")
    print(f"{'case':<34} {'ours':>17} {'VTK reference':>17} {'ratio':>6}  max |diff| HU")
    print("-" * 98)
    for case, ours, reference, diff in lines:
        print(row(case, ours, reference, diff))
    print(row("cold: decode 300 files + 1st slice", (ours_cold, ours_cold),
              (reference_cold, reference_cold) if reference_cold else None, "(VTK: pydicom loop)"))
    for case, value in http.items():
        print(row(f"HTTP GET {case}", value, None))
    print()
    warm = max(ours[0] for case, ours, _, _ in lines if f"{PX}x{PX}" in case)
    http_warm = max(value[0] for case, value in http.items() if case.endswith(f" {PX}"))
    for what, ms in (("warm 512x512 + PNG, in the server's thread", warm), ("warm 512x512 over HTTP", http_warm)):
        verdict = "ok" if ms <= TARGET_MS else "OVER"
        print(f"{verdict:>4}  {what}: {ms:.1f} ms (target <= {TARGET_MS:g} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

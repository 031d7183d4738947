"""Probe of the meshing stage alone: our extract_surface against VTK references on a synthetic CT head.

    .venv/bin/python bench/_surface_probe.py [--ref-a] [--shape 300 512 512] [--budget 300000]

The volume is a 512x512x300 int16 head phantom (0.7 mm pixels, 1 mm slices): air, a scalp, a skull shell with
bumps, brain and a separate jaw, blurred by a 0.6 mm scanner PSF, with 15 HU noise; it is cached in bench/out.
Prints a table of wall times (ratios against the references measured in the same run), the surface error of
our mesh against the full-resolution iso-surface (point-to-triangle distances both ways, 95th percentile and
max), and the peak memory the meshing stage allocates (tracemalloc) over the volume's int16 size.

Reference A: vtkFlyingEdges3D + vtkWindowedSincPolyDataFilter + vtkQuadricDecimation (opt-in: slow).
Reference B: vtkFlyingEdges3D on all cores (vtkSMPTools STDThread backend) + fast_simplification.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import erf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconstruction.surface import available_cpus, extract_surface
from reconstruction.volume import Volume

OUT = Path(__file__).resolve().parent / "out"
SPACING = (1.0, 0.7, 0.7)
LEVEL = 300.5


def head_phantom(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """int16 HU head phantom, (k, j, i), centred, SPACING mm."""
    nz, ny, nx = shape
    dz, dy, dx = SPACING
    rng = np.random.default_rng(seed)
    y = ((np.arange(ny) - ny / 2 + 0.5) * dy)[:, None].astype(np.float32)
    x = ((np.arange(nx) - nx / 2 + 0.5) * dx)[None, :].astype(np.float32)
    theta = np.arctan2(y, x)
    psf = np.float32(np.sqrt(2) * 0.6)
    out = np.empty(shape, np.int16)

    def ellipsoid_distance(z, a, b, c, z0=0.0, y0=0.0):
        # First-order signed distance to the ellipsoid surface, negative inside.
        r = np.sqrt((x / a) ** 2 + ((y - y0) / b) ** 2 + ((z - z0) / c) ** 2)
        g = np.sqrt((x / a**2) ** 2 + ((y - y0) / b**2) ** 2 + ((z - z0) / c**2) ** 2) / np.maximum(r, 1e-6)
        return (r - 1) / np.maximum(g, 1e-6)

    def inside(d):
        return 0.5 * (1 - erf(d / psf))

    for k in range(nz):
        z = np.float32((k - nz / 2 + 0.5) * dz)
        bump = 2.0 * np.sin(6 * theta) * np.cos(z / 15.0)
        head = inside(ellipsoid_distance(z, 80, 100, 115) + 0.3 * bump)
        skull_out = inside(ellipsoid_distance(z, 74, 94, 108) + bump)
        skull_in = inside(ellipsoid_distance(z, 68, 88, 102) + bump)
        jaw = inside(ellipsoid_distance(z, 45, 25, 12, z0=-95, y0=-55))
        v = -1000 + 1040 * head + 1160 * (skull_out - skull_in) - 20 * skull_in + 1160 * jaw
        out[k] = np.round(v + rng.normal(0, 15, v.shape)).astype(np.int16)
    return out


def load_phantom(shape: tuple[int, int, int]) -> np.ndarray:
    path = OUT / f"head_phantom_{'x'.join(map(str, shape))}.npy"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        np.save(path, head_phantom(shape))
    return np.load(path)


def as_volume(voxels: np.ndarray) -> Volume:
    n = voxels.shape[0]
    positions = np.zeros((n, 3))
    positions[:, 2] = np.arange(n) * SPACING[0]
    return Volume(
        voxels=voxels,
        positions=positions,
        row_direction=np.array([1.0, 0.0, 0.0]),
        column_direction=np.array([0.0, 1.0, 0.0]),
        pixel_spacing=(SPACING[1], SPACING[2]),
    )


def vtk_image(voxels: np.ndarray):
    import vtk
    from vtk.util import numpy_support

    image = vtk.vtkImageData()
    image.SetDimensions(voxels.shape[2], voxels.shape[1], voxels.shape[0])
    image.SetSpacing(SPACING[2], SPACING[1], SPACING[0])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(voxels.ravel(), deep=False))
    return image


def flying_edges(image, level: float):
    import vtk

    fe = vtk.vtkFlyingEdges3D()
    fe.SetInputData(image)
    fe.SetValue(0, level)
    fe.ComputeNormalsOff()
    fe.ComputeGradientsOff()
    fe.ComputeScalarsOff()
    fe.Update()
    return fe.GetOutput()


def polydata_arrays(polydata) -> tuple[np.ndarray, np.ndarray]:
    from vtk.util import numpy_support

    points = numpy_support.vtk_to_numpy(polydata.GetPoints().GetData()).astype(np.float64)
    faces = numpy_support.vtk_to_numpy(polydata.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    return points, faces


def reference_b(voxels: np.ndarray, budget: int) -> tuple[float, int]:
    import fast_simplification
    import vtk

    vtk.vtkSMPTools.SetBackend("STDThread")
    image = vtk_image(voxels)
    t0 = time.perf_counter()
    points, faces = polydata_arrays(flying_edges(image, LEVEL))
    if len(faces) > budget:
        points, faces = fast_simplification.simplify(points, faces, target_count=budget)
    return time.perf_counter() - t0, len(faces)


def reference_a(voxels: np.ndarray, budget: int) -> tuple[float, int]:
    import vtk

    vtk.vtkSMPTools.SetBackend("Sequential")
    image = vtk_image(voxels)
    t0 = time.perf_counter()
    surface = flying_edges(image, LEVEL)
    smoother = vtk.vtkWindowedSincPolyDataFilter()
    smoother.SetInputData(surface)
    smoother.SetNumberOfIterations(15)
    smoother.SetPassBand(0.1)
    smoother.NonManifoldSmoothingOn()
    smoother.NormalizeCoordinatesOn()
    smoother.Update()
    decimation = vtk.vtkQuadricDecimation()
    decimation.SetInputData(smoother.GetOutput())
    triangles = surface.GetNumberOfPolys()
    decimation.SetTargetReduction(max(0.0, 1.0 - budget / triangles))
    decimation.Update()
    return time.perf_counter() - t0, decimation.GetOutput().GetNumberOfPolys()


def full_resolution_surface(voxels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The full-resolution iso-surface (flying edges, LPS mm for the probe's axis-aligned volume)."""
    points, faces = polydata_arrays(flying_edges(vtk_image(voxels), LEVEL))
    return points[:, [0, 1, 2]], faces.astype(np.int64)


def closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Closest points to p on triangles abc, all (N, 3) (Ericson, Real-Time Collision Detection, 5.1.5)."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = np.einsum("ij,ij->i", ab, ap), np.einsum("ij,ij->i", ac, ap)
    bp = p - b
    d3, d4 = np.einsum("ij,ij->i", ab, bp), np.einsum("ij,ij->i", ac, bp)
    cp = p - c
    d5, d6 = np.einsum("ij,ij->i", ab, cp), np.einsum("ij,ij->i", ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    denom = va + vb + vc
    with np.errstate(divide="ignore", invalid="ignore"):
        v = vb / denom
        w = vc / denom
        out = a + ab * v[:, None] + ac * w[:, None]
        # Edge and vertex regions, most specific last.
        bc_t = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        region = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
        out[region] = (b + (c - b) * bc_t[:, None])[region]
        ac_t = d2 / (d2 - d6)
        region = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
        out[region] = (a + ac * ac_t[:, None])[region]
        ab_t = d1 / (d1 - d3)
        region = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
        out[region] = (a + ab * ab_t[:, None])[region]
    out[(d6 >= 0) & (d5 <= d6)] = c[(d6 >= 0) & (d5 <= d6)]
    out[(d3 >= 0) & (d4 <= d3)] = b[(d3 >= 0) & (d4 <= d3)]
    out[(d1 <= 0) & (d2 <= 0)] = a[(d1 <= 0) & (d2 <= 0)]
    return out


def distances_to_mesh(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, near: int = 4) -> np.ndarray:
    """Distance from each point to the mesh: exact over the faces around its ``near`` nearest vertices."""
    tree = cKDTree(vertices)
    _, nearest = tree.query(points, k=near)
    order = np.argsort(faces.ravel(), kind="stable")
    owner = order // 3
    starts = np.searchsorted(faces.ravel()[order], np.arange(len(vertices) + 1))
    best = np.full(len(points), np.inf)
    for column in range(near):
        vertex = nearest[:, column]
        valence = starts[vertex + 1] - starts[vertex]
        for slot in range(int(valence.max())):
            has = valence > slot
            face = faces[owner[starts[vertex[has]] + slot]]
            q = closest_on_triangles(points[has], vertices[face[:, 0]], vertices[face[:, 1]], vertices[face[:, 2]])
            best[has] = np.minimum(best[has], np.linalg.norm(points[has] - q, axis=1))
    return best


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 1) -> np.ndarray:
    """``count`` points uniformly by area on the mesh."""
    rng = np.random.default_rng(seed)
    a, b, c = (vertices[faces[:, n]] for n in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    pick = rng.choice(len(faces), size=count, p=area / area.sum())
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)
    u, v = 1 - s, s * (1 - r2)
    return a[pick] * u[:, None] + b[pick] * v[:, None] + c[pick] * (1 - u - v)[:, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512], metavar=("K", "J", "I"))
    parser.add_argument("--budget", type=int, default=300_000)
    parser.add_argument("--ref-a", action="store_true", help="also time reference A (slow)")
    parser.add_argument("--repeat", type=int, default=3, help="best of n for our timings and reference B")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = tuple(args.shape)
    if args.rss_child:
        _rss_child(shape, args.budget)
        return

    voxels = load_phantom(shape)
    volume = as_volume(voxels)

    def ours(workers: int | None = None):
        return extract_surface(volume, "bone", target_triangles=args.budget, workers=workers)

    ours_all = _best_of(args.repeat, ours)
    ours_one = _best_of(args.repeat, lambda: ours(workers=1))
    mesh = ours_all[1]
    ref_b = min(reference_b(voxels, args.budget) for _ in range(args.repeat))
    ref_a = reference_a(voxels, args.budget) if args.ref_a else None

    tracemalloc.start()
    ours()
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = json.loads(
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--rss-child",
                "--shape",
                *map(str, shape),
                "--budget",
                str(args.budget),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )

    full_v, full_f = full_resolution_surface(voxels)
    ours_v, ours_f = mesh.vertices.astype(np.float64), mesh.faces.astype(np.int64)
    ours_to_full = distances_to_mesh(sample_surface(ours_v, ours_f, 400_000), full_v, full_f)
    full_to_ours = distances_to_mesh(sample_surface(full_v, full_f, 400_000), ours_v, ours_f)

    size = voxels.nbytes
    print(f"volume {voxels.shape} int16 ({size / 1e6:.0f} MB), level {LEVEL} HU, budget {args.budget}")
    print(f"full-resolution iso-surface: {len(full_f)} triangles; best of {args.repeat} runs")
    print(f"{'method':<46} {'seconds':>8} {'triangles':>10} {'ours/it':>8}")
    rows = [
        (f"ours: extract_surface, {available_cpus()} workers", ours_all[0], mesh.triangles),
        ("ours: extract_surface, 1 worker", ours_one[0], ours_one[1].triangles),
        ("ref B: FlyingEdges3D(STDThread) + fast_simpl.", *ref_b),
    ]
    if ref_a:
        rows.append(("ref A: FlyingEdges3D + WindowedSinc + Quadric", *ref_a))
    for name, seconds, triangles in rows:
        print(f"{name:<46} {seconds:8.3f} {triangles:10d} {ours_all[0] / seconds:8.3f}")
    for name, d in (("ours -> full-res", ours_to_full), ("full-res -> ours", full_to_ours)):
        p95 = np.percentile(d, 95)
        print(f"surface error {name}: p95 {p95:.3f} mm, max {d.max():.3f} mm, mean {d.mean():.3f} mm")
    traced, growth, children = traced_peak / 1e6, rss["growth"] / 1e6, rss["children"] / 1e6
    print(f"meshing peak numpy allocation (tracemalloc): {traced:.0f} MB = {traced_peak / size:.2f} x volume")
    print(f"meshing peak RSS growth over the loaded volume: {growth:.0f} MB = {rss['growth'] / size:.2f} x")
    print(f"largest forked worker's peak RSS: {children:.0f} MB (the volume's shared pages included)")


def _rss_child(shape: tuple[int, int, int], budget: int) -> None:
    """Run in a fresh process: the peak resident memory meshing adds on top of the loaded volume (Linux: the
    high-water mark is reset through /proc/self/clear_refs before meshing)."""
    volume = as_volume(load_phantom(shape))
    before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    extract_surface(volume, "bone", target_triangles=budget)
    growth = _status_kb("VmHWM") - before
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"growth": growth * 1024, "children": children * 1024}))


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _best_of(n: int, run) -> tuple[float, object]:
    best = None
    for _ in range(n):
        t0 = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - t0
        if best is None or seconds < best[0]:
            best = (seconds, result)
    return best


if __name__ == "__main__":
    main()

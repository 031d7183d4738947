"""Slices over HTTP, on the Philips head phantom's gantry-tilted series: against an independent reference, a
plane on an acquired slice, PNG windows, the room's geometry, bad planes, and who may read them.

The reference is written here from pydicom and the standard's geometry alone (ImagePositionPatient,
ImageOrientationPatient, PixelSpacing), not from the product's code: each point is placed between the two
slices around it by its distance along the normal, projected onto each of them, sampled bilinearly there, and
the two values blended by distance.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import DICOM, SYNTHETIC_PATIENT, require_path, write_ct_series
from hubtools import BONE, admin, create_room, mint, start
from PIL import Image

from server.appkeys import CATALOG, LIBRARY, SLICES
from server.services.imports import import_folder

TILTED = DICOM / "ct-head-phantom-philips" / "DICOM" / "S21610" / "S2010"  # -18.5 degrees of gantry tilt
MAE_HU = 2.0


class Reference:
    """The tilted series read with pydicom: HU pixels, IPP, IOP and spacing, sorted along the normal."""

    def __init__(self, folder: Path):
        datasets = [pydicom.dcmread(path) for path in sorted(folder.iterdir())]
        datasets = [ds for ds in datasets if "PixelData" in ds]
        iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=np.float64)
        self.row, self.column = iop[:3], iop[3:]
        self.normal = np.cross(self.row, self.column)
        datasets.sort(key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=np.float64), self.normal)))
        self.ipp = np.asarray([ds.ImagePositionPatient for ds in datasets], dtype=np.float64)
        self.distances = self.ipp @ self.normal
        self.drow, self.dcol = (float(s) for s in datasets[0].PixelSpacing)
        self.hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in datasets])
        self.rows, self.columns = self.hu.shape[1:]

    def sample(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(values, inside): the reference value at each LPS point, and whether the point lies inside the
        stack (between the first and last slice, and within both neighbouring slices' pixel centres)."""
        along = points @ self.normal
        below = np.clip(np.searchsorted(self.distances, along) - 1, 0, len(self.distances) - 2)
        t = (along - self.distances[below]) / (self.distances[below + 1] - self.distances[below])
        inside = (along >= self.distances[0]) & (along <= self.distances[-1])
        values = np.zeros(len(points))
        for k in (0, 1):
            slice_index = below + k
            offset = points - self.ipp[slice_index]
            i, j = offset @ self.row / self.dcol, offset @ self.column / self.drow
            inside &= (i >= 0) & (i <= self.columns - 1) & (j >= 0) & (j <= self.rows - 1)
            values += (t if k else 1 - t) * self._bilinear(slice_index, j, i)
        return values, inside

    def _bilinear(self, k: np.ndarray, j: np.ndarray, i: np.ndarray) -> np.ndarray:
        j0 = np.clip(np.floor(j).astype(int), 0, self.rows - 2)
        i0 = np.clip(np.floor(i).astype(int), 0, self.columns - 2)
        tj, ti = j - j0, i - i0
        hu = self.hu
        return ((hu[k, j0, i0] * (1 - ti) + hu[k, j0, i0 + 1] * ti) * (1 - tj)
                + (hu[k, j0 + 1, i0] * (1 - ti) + hu[k, j0 + 1, i0 + 1] * ti) * tj)


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference(require_path(TILTED, "the Philips head phantom's tilted series (../shared/dicom)"))


@pytest.fixture
async def served(aiohttp_server, tmp_path):
    """(app, http, room id) of a server with the tilted series imported and a room over a mesh of it."""
    import aiohttp

    require_path(TILTED, "the Philips head phantom's tilted series (../shared/dicom)")
    _, app, url = await start(aiohttp_server, tmp_path / "data")
    imported = import_folder(app[LIBRARY], TILTED)
    study, series = imported["study_id"], imported["series"][0]["id"]
    app[CATALOG].add_mesh({"id": "m-tilted-bone", "study_id": study, "series_id": series, "preset": "bone",
                           "threshold": 300.5, "triangles": 10, "vertices": 8, "bbox_lps_mm": [[0, 0, 0], [1, 1, 1]],
                           "artifacts": {}})
    async with aiohttp.ClientSession(url) as http:
        room = await create_room(http, app, meshes=("m-tilted-bone",), study_id=study)
        yield app, http, room["room"]["id"]


def query(origin, u, v, width_mm, height_mm, px, **extra) -> str:
    def triple(vector) -> str:
        return ",".join(repr(float(x)) for x in vector)

    fields = {"origin": triple(origin), "u": triple(u), "v": triple(v), "width_mm": width_mm,
              "height_mm": height_mm, "px": px, **extra}
    return "&".join(f"{key}={value}" for key, value in fields.items())


async def hu_slice(http, app, room_id: str, origin, u, v, width_mm, height_mm, px) -> np.ndarray:
    r = await http.get(f"/api/rooms/{room_id}/slice?" + query(origin, u, v, width_mm, height_mm, px, format="hu"),
                       headers=admin(app))
    assert r.status == 200, await r.text()
    rows, columns = (int(n) for n in r.headers["X-Slice-Shape"].split(","))
    assert rows == round(px * height_mm / width_mm) and columns == px
    return np.frombuffer(await r.read(), dtype="<i2").reshape(rows, columns)


def pixel_centres(origin, u, v, width_mm, height_mm, px) -> np.ndarray:
    """The issue's formula for the centre of pixel (r, c), written out."""
    rows = round(px * height_mm / width_mm)
    r, c = np.mgrid[0:rows, 0:px]
    return (np.asarray(origin) + (((c + 0.5) - px / 2) * (width_mm / px))[..., None] * np.asarray(u)
            + (((r + 0.5) - rows / 2) * (height_mm / rows))[..., None] * np.asarray(v))


def unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64)
    return vector / np.linalg.norm(vector)


async def test_axial_and_oblique_planes_match_an_independent_reference(served, reference):
    app, http, room_id = served
    centre = reference.ipp.mean(axis=0) + 0.5 * (reference.columns * reference.dcol * reference.row
                                                 + reference.rows * reference.drow * reference.column)
    oblique_u = unit([0.9, 0.3, 0.3])
    planes = {
        "axial": ((1, 0, 0), (0, 1, 0)),  # the patient's axial plane, not the tilted slices' plane
        "oblique": (oblique_u, unit(np.cross(oblique_u, [0.2, 0.5, 1.0]))),
    }
    for name, (u, v) in planes.items():
        image = await hu_slice(http, app, room_id, centre, u, v, 320.0, 280.0, 256)
        expected, inside = reference.sample(pixel_centres(centre, u, v, 320.0, 280.0, 256).reshape(-1, 3))
        assert inside.mean() > 0.5, f"{name}: the plane misses the stack"
        mae = float(np.abs(image.ravel()[inside] - expected[inside]).mean())
        assert mae <= MAE_HU, f"{name}: mean absolute error {mae:.2f} HU"
        assert (image.ravel()[~inside] == -1024).mean() > 0.5  # beyond the stack: air (it crosses the edge)
        assert image.max() > 700  # the plane cuts the phantom's bone


async def test_a_plane_on_an_acquired_slice_gives_back_its_pixels(served, reference):
    app, http, room_id = served
    width, height = reference.columns * reference.dcol, reference.rows * reference.drow
    for k in (0, len(reference.ipp) // 2, len(reference.ipp) - 1):
        # The slice's centre: its pixel grid's middle, so every output pixel centre is an acquired one.
        origin = (reference.ipp[k] + (reference.columns / 2 - 0.5) * reference.dcol * reference.row
                  + (reference.rows / 2 - 0.5) * reference.drow * reference.column)
        image = await hu_slice(http, app, room_id, origin, reference.row, reference.column, width, height,
                               reference.columns)
        assert np.abs(image - reference.hu[k]).max() <= 1, f"slice {k}"


async def test_the_png_is_windowed_and_shows_the_skull_in_bone_window(served, reference):
    app, http, room_id = served
    info = await (await http.get(f"/api/rooms/{room_id}/volume", headers=admin(app))).json()
    assert info["modality"] == "CT" and info["shape"] == [54, 512, 512] and info["air"] == -1024
    assert [w["name"] for w in info["windows"]] == ["bone", "brain", "soft tissue", "lung"]
    assert info["normal"] == pytest.approx(reference.normal.tolist(), abs=1e-4)
    centre = info["centre_lps_mm"]
    u, v = (1, 0, 0), (0, 1, 0)
    r = await http.get(f"/api/rooms/{room_id}/slice?" + query(centre, u, v, 250.0, 250.0, 256, window=1800, level=400),
                       headers=admin(app))
    assert r.status == 200 and r.content_type == "image/png"
    assert r.headers["X-Slice-Window"] == "1800,400"
    grey = np.asarray(Image.open(io.BytesIO(await r.read())))
    assert grey.shape == (256, 256) and grey.dtype == np.uint8
    hu = await hu_slice(http, app, room_id, centre, u, v, 250.0, 250.0, 256)
    expected = np.clip((hu - (400 - 900)) / 1800 * 255, 0, 255)
    assert np.abs(grey - expected).max() <= 1
    assert (grey[hu > 1000] > 200).all() and (grey[hu < -900] == 0).all()  # bone white, air black
    # The same request again is the same image: an ETag lets the client keep it.
    again = await http.get(f"/api/rooms/{room_id}/slice?" + query(centre, u, v, 250.0, 250.0, 256, window=1800,
                                                                   level=400),
                           headers={**admin(app), "If-None-Match": r.headers["ETag"]})
    assert again.status == 304
    assert len(app[SLICES].cache) == 1 and app[SLICES].cache.misses == 1  # decoded once


async def test_the_room_series_is_read_by_its_invites_only(served):
    app, http, room_id = served
    plane = query((0, 100, 770), (1, 0, 0), (0, 1, 0), 100.0, 100.0, 64)
    own = await mint(http, app, room_id, "student", "Sam")
    for path in (f"/api/rooms/{room_id}/slice?{plane}", f"/api/rooms/{room_id}/volume"):
        assert (await http.get(path, headers={"Authorization": f"Bearer {own}"})).status == 200
    other = await create_room(http, app, meshes=(BONE,))
    stranger = await mint(http, app, other["room"]["id"], "surgeon", "Other")
    for path in (f"/api/rooms/{room_id}/slice?{plane}", f"/api/rooms/{room_id}/volume"):
        r = await http.get(path, headers={"Authorization": f"Bearer {stranger}"})
        assert r.status == 403 and (await r.json())["error"] == "forbidden"
    # The admin reads any room; a series outside the room's study is not found.
    r = await http.get(f"/api/rooms/{room_id}/slice?{plane}&series=se-1", headers=admin(app))
    assert r.status == 404
    # A closed room's invites still read its slices: its replay shows the planes as they moved.
    assert (await http.post(f"/api/rooms/{room_id}/close", headers=admin(app))).status == 200
    r = await http.get(f"/api/rooms/{room_id}/slice?{plane}", headers={"Authorization": f"Bearer {own}"})
    assert r.status == 200


GOOD = {"origin": "0,0,0", "u": "1,0,0", "v": "0,1,0", "width_mm": "100", "height_mm": "100", "px": "64"}
BAD_PLANES = [
    ({"u": "1.1,0,0"}, "u must be a unit vector"),
    ({"v": "0,0.5,0"}, "v must be a unit vector"),
    ({"v": "1,0,0"}, "parallel"),
    ({"v": "0.1,0.995,0"}, "orthogonal"),
    ({"u": "0,0,0"}, "u must be a unit vector"),
    ({"px": "15"}, "px must be from 16 to 2048"),
    ({"px": "2049"}, "px must be from 16 to 2048"),
    ({"width_mm": "0"}, "width_mm must be a positive"),
    ({"width_mm": "-5"}, "width_mm must be a positive"),
    ({"height_mm": "1e6"}, "height_mm must be a positive"),
    ({"width_mm": "10", "height_mm": "10000", "px": "2048"}, "rows"),
    ({"origin": "1,2"}, "origin must be three finite numbers"),
    ({"origin": "nan,0,0"}, "origin must be three finite numbers"),
    ({"u": None}, "u is required"),
    ({"width_mm": None}, "width_mm is required"),
    ({"px": "wide"}, "px must be an integer"),
    ({"format": "jpeg"}, "format must be one of"),
    ({"window": "0"}, "window must be positive"),
    ({"level": "inf"}, "level must be finite"),
]


async def test_bad_planes_get_400_and_unknown_rooms_404(aiohttp_server, tmp_path):
    import aiohttp

    _, app, url = await start(aiohttp_server, tmp_path / "data")
    async with aiohttp.ClientSession(url) as http:
        room_id = (await create_room(http, app))["room"]["id"]
        for change, words in BAD_PLANES:
            fields = {key: value for key, value in {**GOOD, **change}.items() if value is not None}
            r = await http.get(f"/api/rooms/{room_id}/slice?" + "&".join(f"{k}={v}" for k, v in fields.items()),
                               headers=admin(app))
            body = await r.json()
            assert r.status == 400 and words in body["detail"], (change, body)
        plane = "&".join(f"{k}={v}" for k, v in GOOD.items())
        for path in (f"/api/rooms/rm-nope/slice?{plane}", "/api/rooms/rm-nope/volume"):
            r = await http.get(path, headers=admin(app))
            assert r.status == 404 and (await r.json())["error"] == "not_found"


PLANE = {"origin": [0, 100, 770], "u": [1, 0, 0], "v": [0, 1, 0], "width_mm": 240, "height_mm": 240,
         "window": 1800, "level": 400}


async def test_slice_planes_are_shared_with_everyone_and_set_by_instructors_and_surgeons(aiohttp_server, tmp_path):
    from hubtools import Lobby

    room = await Lobby.open(aiohttp_server, tmp_path / "data", mode="training")
    try:
        instructor = await room.client("instructor", "Dr Moreau")
        surgeon = await room.client("surgeon", "Dr Okafor")
        students = [await room.client("student", f"Student {n}") for n in (1, 2)]
        observer = await room.client("observer", "Visitor")
        ack = await surgeon.op("slice.set", **PLANE)
        assert ack["ok"], ack
        plane_id = f"s{ack['seq']}"
        # The surgeon drags it while the instructor changes its window: both apply, for everyone, in one order.
        moves = [surgeon.op("slice.set", id=plane_id, origin=[0, 100, 770 + dz]) for dz in (2, 4, 6)]
        acks = await asyncio.gather(*moves, instructor.op("slice.set", id=plane_id, window=80, level=40))
        assert all(a["ok"] for a in acks), acks
        await room.settle()
        for client in (instructor, surgeon, *students, observer):
            plane = client.state.slices[plane_id]
            assert plane.fields["origin"] == [0.0, 100.0, 776.0]
            assert (plane.fields["window"], plane.fields["level"]) == (80.0, 40.0)
            assert client.state.snapshot() == room.live.room.state.snapshot()
        # Students and observers see planes but may not set or clear them.
        for client, reason in ((students[0], "students may not set slice planes"),
                               (observer, "observers are read-only")):
            refused = await client.op("slice.set", **PLANE)
            assert refused == {"ok": False, "error": {"code": "forbidden", "detail": reason}}
        refused = await students[1].op("slice.clear", id=plane_id)
        assert refused["error"] == {"code": "forbidden", "detail": "students may not clear slice planes"}
        # At most three planes; a late joiner gets them in its snapshot.
        for _ in range(2):
            assert (await instructor.op("slice.set", **PLANE))["ok"]
        full = await surgeon.op("slice.set", **PLANE)
        assert full["error"]["code"] == "limit"
        late = await room.client("student", "Late")
        assert set(late.snapshots[-1]["state"]["slices"]) == set(room.live.room.state.slices)
        assert (await surgeon.op("slice.clear"))["ok"]
        await room.settle()
        assert all(not c.state.slices for c in (instructor, surgeon, *students, observer, late))
    finally:
        await room.close()


async def test_nothing_identifying_reaches_a_slice_client(aiohttp_server, tmp_path):
    """A series with a patient's name, IDs and institution: neither the geometry nor the image headers carry any
    of them, nor a DICOM UID."""
    import aiohttp

    folder = tmp_path / "series"
    paths = write_ct_series(folder, [(0.0, 0.0, float(z)) for z in range(6)])
    uids = {str(pydicom.dcmread(paths[0]).get(keyword)) for keyword in ("StudyInstanceUID", "SeriesInstanceUID",
                                                                           "SOPInstanceUID")}
    _, app, url = await start(aiohttp_server, tmp_path / "data")
    imported = import_folder(app[LIBRARY], folder)
    app[CATALOG].add_mesh({"id": "m-synthetic", "study_id": imported["study_id"],
                           "series_id": imported["series"][0]["id"], "preset": "bone", "threshold": 300.5,
                           "triangles": 1, "vertices": 3, "bbox_lps_mm": [[0, 0, 0], [1, 1, 1]], "artifacts": {}})
    async with aiohttp.ClientSession(url) as http:
        room = await create_room(http, app, meshes=("m-synthetic",), study_id=imported["study_id"])
        room_id = room["room"]["id"]
        volume = await http.get(f"/api/rooms/{room_id}/volume", headers=admin(app))
        image = await http.get(f"/api/rooms/{room_id}/slice?" + query((2, 2, 2), (1, 0, 0), (0, 1, 0), 4.0, 4.0, 16),
                               headers=admin(app))
        assert volume.status == image.status == 200
        seen = (await volume.text()) + repr(dict(volume.headers)) + repr(dict(image.headers))
    for secret in [*SYNTHETIC_PATIENT.values(), *uids]:
        assert secret not in seen

"""Named structures on the real cases of ../shared/dicom: segmentations read (DICOM SEG, RTSTRUCT, NIfTI label
map), placed on their series' grid, meshed one structure each; and structures grown from a seed.

Every mesh is checked against its own mask: each vertex lies within one voxel diagonal of the mask's boundary
(by a distance transform of the boundary voxels, written here), and the mesh encloses the mask's voxel volume
within 5 %.
"""

from __future__ import annotations

import io
import math
import sys

import numpy as np
import pydicom
import pytest
from conftest import DICOM, REPO, require_path
from scipy import ndimage

from reconstruction.dicom_seg import write_seg
from reconstruction.gltf import glb_bytes
from reconstruction.growing import GrowError, grow_region, skin_share
from reconstruction.pipeline import load_volume
from reconstruction.segmentation import SegmentationError, SegmentationMismatchError, find_segmentations
from reconstruction.sources import FileRef
from reconstruction.structure_surface import enclosed_volume_mm3, structure_meshes
from reconstruction.structures import Structure, StructureMask, crop
from reconstruction.volume import Volume

LIVER = DICOM / "seg-liver-dcmqi"
LUNG = DICOM / "rtstruct-lung-4dlung"
ABDOMEN = DICOM / "labelmap-abdomen-totalseg"
RTUTILS = DICOM / "rtstruct-phantom-rtutils"


@pytest.fixture(scope="module")
def cases():
    """{case: (volume, image folder)} loaded once."""
    out = {}
    for case in (LIVER, LUNG, ABDOMEN, RTUTILS):
        require_path(case, case.name)
        _, _, volume, _ = load_volume([case / "image"])
        out[case.name] = volume
    return out


def only(folder):
    found = find_segmentations([folder])
    assert len(found) == 1, [s.source for s in found]
    return found[0]


# -- what the files say ------------------------------------------------------------------------------------------
def test_seg_structures_are_named_and_coloured_as_the_file_says(cases):
    volume = cases[LIVER.name]
    liver = only(LIVER / "seg" / "liver.dcm")
    assert [(s.number, s.name, s.color) for s in liver.structures] == [(1, "Liver", (221, 130, 101))]
    assert liver.structures[0].code["type"] == {"value": "T-62000", "scheme": "SRT", "meaning": "Liver"}
    (mask,) = liver.masks_on(volume)
    assert mask.voxels == 107_098  # the README's figure
    assert np.mean(hu_inside(volume, mask)) == pytest.approx(37, abs=1)

    overlaps = only(LIVER / "seg" / "partial_overlaps.dcm")
    assert [(s.name, s.color) for s in overlaps.structures] == [
        ("GREEN", (128, 174, 128)), ("ORANGE", (216, 101, 79)), ("PURPLE", (183, 156, 220)),
        ("LIGHT_BLUE", (140, 224, 228)), ("DARK_BLUE", (0, 151, 206))]
    assert [m.voxels for m in overlaps.masks_on(volume)] == [9602, 11888, 10743, 6693, 4713]


def shoelace_ml(rtstruct, roi: int, thickness_mm: float) -> float:
    """An ROI's volume from its contours' polygon areas (axial contours) times the slice thickness."""
    ds = pydicom.dcmread(rtstruct)
    item = next(c for c in ds.ROIContourSequence if int(c.ReferencedROINumber) == roi)
    total = 0.0
    for contour in item.ContourSequence:
        p = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
        total += 0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], 1)) - np.dot(p[:, 1], np.roll(p[:, 0], 1)))
    return total * thickness_mm / 1000.0


def test_rtstruct_rois_are_rasterised_on_the_series_grid(cases):
    volume = cases[LUNG.name]
    segmentation = only(LUNG / "rtstruct")
    assert [(s.number, s.name, s.color) for s in segmentation.structures] == [
        (17, "Tumor_c40", (255, 0, 0)), (18, "LN_c40", (255, 150, 0)), (19, "Carina_c40", (255, 255, 0)),
        (20, "Vertebra_c40", (34, 139, 34))]
    masks = segmentation.masks_on(volume)
    # Slices (the README's k ranges), mean HU inside, and the volume of the polygons themselves (pixel centres
    # inside a polygon count its area without bias).
    expected = {17: ((48, 75), -25), 18: ((71, 86), 3), 19: ((70, 70), -429), 20: ((70, 74), 173)}
    for mask in masks:
        (k0, k1), hu = expected[mask.structure.number]
        assert (mask.start[0], mask.start[0] + mask.mask.shape[0] - 1) == (k0, k1)
        assert np.mean(hu_inside(volume, mask)) == pytest.approx(hu, abs=15)
        polygons = shoelace_ml(LUNG / "rtstruct" / "1-1.dcm", mask.structure.number, 3.0)
        assert mask.volume_ml(volume) == pytest.approx(polygons, rel=0.03)


def test_nifti_label_map_takes_its_names_and_colours_from_its_table(cases):
    volume = cases[ABDOMEN.name]
    segmentation = only(ABDOMEN / "labels")
    import json

    table = json.loads((ABDOMEN / "labels" / "label_table_total.json").read_text())["labels"]
    present = [t for t in table if t["voxels_in_example"] > 0]
    assert len(segmentation.structures) == len(present) == 31
    for structure, row in zip(segmentation.structures, present, strict=True):
        assert (structure.number, structure.name, structure.color) == (
            row["label"], row["name"], tuple(row["color_rgb_from_nifti_caret_extension"]))
    masks = {m.structure.name: m for m in segmentation.masks_on(volume)}
    assert {name: masks[name].voxels for name in ("spleen", "liver")} == {
        row["name"]: row["voxels_in_example"] for row in present if row["name"] in ("spleen", "liver")}
    # The README's mean HU on the DICOM grid: the map lies on the CT voxel for voxel.
    for name, hu in {"liver": 89, "spleen": 80, "aorta": 177, "humerus_left": 682, "spinal_cord": 18}.items():
        assert np.mean(hu_inside(volume, masks[name])) == pytest.approx(hu, abs=3), name


def test_a_folder_of_masks_is_one_structure_per_file_named_after_it(cases, tmp_path):
    import nibabel as nib

    volume = cases[ABDOMEN.name]
    image = nib.load(ABDOMEN / "labels" / "example_seg_dicom.nii.gz")
    values = np.asarray(image.dataobj)
    folder = tmp_path / "segmentations"
    folder.mkdir()
    for name, label in (("liver", 5), ("spleen", 1), ("aorta", 52)):
        nib.save(nib.Nifti1Image((values == label).astype(np.uint8), image.affine), folder / f"{name}.nii.gz")
    segmentation = only(folder)
    assert [s.name for s in segmentation.structures] == ["aorta", "liver", "spleen"]
    voxels = [m.voxels for m in segmentation.masks_on(volume)]
    assert voxels == [int(np.count_nonzero(values == label)) for label in (52, 5, 1)]


def test_label_tables_beside_the_file_win(cases, tmp_path):
    import shutil

    shutil.copy(ABDOMEN / "labels" / "example_seg_dicom.nii.gz", tmp_path / "map.nii.gz")
    (tmp_path / "labels.json").write_text('{"5": {"name": "Hepar", "color": "#102030"}, "1": "Lien"}')
    names = {s.number: (s.name, s.color) for s in only(tmp_path).structures}
    assert names[5] == ("Hepar", (16, 32, 48))
    assert names[1][0] == "Lien"
    (tmp_path / "labels.json").unlink()
    (tmp_path / "itksnap.txt").write_text('# ITK-SNAP\n    5   10   20   30        1  1  1    "Leber"\n')
    assert {s.number: (s.name, s.color) for s in only(tmp_path).structures}[5] == ("Leber", (10, 20, 30))


# -- refusals ----------------------------------------------------------------------------------------------------
def test_a_seg_of_another_frame_of_reference_or_a_truncated_one_is_refused(cases, tmp_path):
    liver = only(LIVER / "seg" / "liver.dcm")
    volume = cases[LIVER.name]
    assert liver.references_series("1.2.3.other", "", frozenset()) == "another frame of reference"
    instances = frozenset(pydicom.dcmread(p).SOPInstanceUID for p in sorted((LIVER / "image").iterdir()))
    series = pydicom.dcmread(next((LIVER / "image").iterdir())).SeriesInstanceUID
    assert liver.references_series(liver.frame_of_reference_uid, series, instances) is None
    with pytest.raises(SegmentationMismatchError, match=r"fraction of a pixel|orientation|spacing|slice"):
        only(LIVER / "seg" / "liver.dcm").masks_on(shifted(volume, [0.3, 0.0, 0.0]))
    data = (LIVER / "seg" / "liver.dcm").read_bytes()
    (tmp_path / "truncated.dcm").write_bytes(data[: len(data) - 20_000])
    with pytest.raises(SegmentationError, match=r"truncated\.dcm"):
        only(tmp_path / "truncated.dcm").masks_on(volume)


def test_a_nifti_of_another_shape_or_grid_is_refused(cases, tmp_path):
    import nibabel as nib

    volume = cases[ABDOMEN.name]
    image = nib.load(ABDOMEN / "labels" / "example_seg_dicom.nii.gz")
    values = np.asarray(image.dataobj)
    nib.save(nib.Nifti1Image(values[:, :, :19], image.affine), tmp_path / "short.nii.gz")
    with pytest.raises(SegmentationMismatchError, match="grid"):
        only(tmp_path / "short.nii.gz").masks_on(volume)
    moved = image.affine.copy()
    moved[0, 3] += 0.5 * 0.9765625  # half a voxel: no voxel centre is nearer one than the other
    (tmp_path / "short.nii.gz").unlink()
    nib.save(nib.Nifti1Image(values, moved), tmp_path / "moved.nii.gz")
    with pytest.raises(SegmentationMismatchError, match="half a voxel"):
        only(tmp_path / "moved.nii.gz").masks_on(volume)


def shifted(volume: Volume, offset) -> Volume:
    return Volume(voxels=volume.voxels, positions=volume.positions + np.asarray(offset),
                  row_direction=volume.row_direction, column_direction=volume.column_direction,
                  pixel_spacing=volume.pixel_spacing)


# -- meshes against their masks ----------------------------------------------------------------------------------
def hu_inside(volume: Volume, mask: StructureMask) -> np.ndarray:
    box = tuple(slice(s, s + n) for s, n in zip(mask.start, mask.mask.shape, strict=True))
    return volume.voxels[box][mask.mask]


def lps_to_index(volume: Volume, points: np.ndarray) -> np.ndarray:
    """Continuous (k, j, i) of LPS points, through the true slice positions (written here, not the library's)."""
    distances = volume.positions @ volume.normal
    along = points @ volume.normal
    n = len(distances)
    k = np.interp(along, distances, np.arange(n))
    below, above = along < distances[0], along > distances[-1]
    k[below] = (along[below] - distances[0]) / (distances[1] - distances[0])
    k[above] = n - 1 + (along[above] - distances[-1]) / (distances[-1] - distances[-2])
    k0 = np.clip(np.floor(k).astype(int), 0, n - 2)
    t = (k - k0)[:, None]
    origin = volume.positions[k0] * (1 - t) + volume.positions[k0 + 1] * t
    delta = points - origin
    j = delta @ volume.column_direction / volume.pixel_spacing[0]
    i = delta @ volume.row_direction / volume.pixel_spacing[1]
    return np.stack([k, j, i], axis=1)


def check_mesh_against_mask(volume: Volume, mask: StructureMask, mesh) -> None:
    """Every vertex within one voxel diagonal of the mask's boundary voxels; the enclosed volume within 5 %.

    The distance transform gives each voxel centre's distance to the nearest boundary voxel (a mask voxel with
    a face neighbour outside it); a vertex is at most that plus its own distance to the voxel centre, taking the
    best of the eight centres around it."""
    spacing = np.array([float(np.max(volume.slice_spacings)), *volume.pixel_spacing])
    diagonal = float(np.linalg.norm(spacing))
    padded = np.pad(mask.mask, 2)
    boundary = padded & ~ndimage.binary_erosion(padded, ndimage.generate_binary_structure(3, 1))
    distance = ndimage.distance_transform_edt(~boundary, sampling=spacing)  # mm to the nearest boundary voxel
    index = lps_to_index(volume, mesh.vertices.astype(np.float64)) - np.asarray(mask.start) + 2
    bound = np.full(len(index), np.inf)
    for corner in np.ndindex(2, 2, 2):
        centre = np.clip(np.floor(index).astype(int) + corner, 0, np.array(padded.shape) - 1)
        bound = np.minimum(bound, distance[tuple(centre.T)] + np.linalg.norm((index - centre) * spacing, axis=1))
    name = mask.structure.name
    assert bound.max() <= diagonal, f"{name}: a vertex {bound.max():.2f} mm from the boundary (diagonal {diagonal:.2f})"
    expected = mask.volume_ml(volume) * 1000
    assert enclosed_volume_mm3(mesh) == pytest.approx(expected, rel=0.05), name


@pytest.mark.parametrize("case,folder", [(LIVER.name, "seg"), (LUNG.name, "rtstruct"), (ABDOMEN.name, "labels"),
                                         (RTUTILS.name, "rtstruct")])
def test_each_mesh_stays_on_its_mask_and_keeps_its_volume(cases, case, folder):
    volume = cases[case]
    for segmentation in find_segmentations([DICOM / case / folder]):
        masks = [m for m in segmentation.masks_on(volume) if m.voxels]
        meshes = structure_meshes(volume, masks)
        for mask, mesh in zip(masks, meshes, strict=True):
            assert mesh.name == mask.structure.name and mesh.triangles > 0
            check_mesh_against_mask(volume, mask, mesh)


def test_the_glb_has_one_named_node_in_its_colour_per_structure(cases):
    from reconstruction.draco import read_glb

    volume = cases[LIVER.name]
    segmentation = only(LIVER / "seg" / "partial_overlaps.dcm")
    meshes = structure_meshes(volume, segmentation.masks_on(volume))
    doc, _ = read_glb(glb_bytes(meshes, volume=volume))
    assert [n["name"] for n in doc["nodes"]] == ["GREEN", "ORANGE", "PURPLE", "LIGHT_BLUE", "DARK_BLUE"]
    assert [n["extras"]["structure"] for n in doc["nodes"]] == [1, 2, 3, 4, 5]
    assert doc["nodes"][1]["extras"]["code"]["type"]["meaning"] == "Artery"
    material = doc["materials"][doc["meshes"][doc["nodes"][0]["mesh"]]["primitives"][0]["material"]]
    assert material["name"] == "GREEN"
    srgb = [round(255 * (c / 12.92 if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055))
            for c in material["pbrMetallicRoughness"]["baseColorFactor"][:3]]
    assert srgb == [128, 174, 128]


def test_rtstruct_holes_stay_holes(cases, tmp_path):
    """An annulus (a contour inside another on the same slices) is a ring: its mesh encloses the ring's volume
    and nothing at its centre."""
    volume = cases[RTUTILS.name]
    ds = pydicom.dcmread(RTUTILS / "rtstruct" / "rt.dcm")
    item = ds.ROIContourSequence[0]
    template = item.ContourSequence[0]
    centre = np.asarray(template.ContourData, float).reshape(-1, 3).mean(axis=0)
    contours = []
    for z in (volume.positions[k][2] for k in range(volume.shape[0])):
        for radius in (20.0, 10.0):
            t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
            points = np.stack([centre[0] + radius * np.cos(t), centre[1] + radius * np.sin(t), np.full_like(t, z)], 1)
            contour = pydicom.Dataset()
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [f"{v:.3f}" for v in points.ravel()]
            contours.append(contour)
    item.ContourSequence = contours
    ds.save_as(tmp_path / "ring.dcm")
    ring = only(tmp_path / "ring.dcm")
    mask = ring.masks_on(volume)[0]
    _, j, i = (np.asarray(lps_to_index(volume, centre[None])[0]).round().astype(int) - np.asarray(mask.start))
    assert not mask.mask[:, j, i].any()  # the centre is a hole on every slice
    expected = math.pi * (20.0**2 - 10.0**2) * volume.shape[0] * float(np.median(volume.slice_spacings)) / 1000
    assert mask.volume_ml(volume) == pytest.approx(expected, rel=0.03)
    (mesh,) = structure_meshes(volume, [mask])
    check_mesh_against_mask(volume, mask, mesh)
    # No vertex within 8 mm of the axis: the hole stays open in the mesh.
    axial = np.linalg.norm((mesh.vertices[:, :2] - centre[:2]), axis=1)
    assert axial.min() > 8.0


def test_tilted_uneven_grid_meshes_a_sphere_in_true_lps(tmp_path):
    """A sphere of 12 mm in LPS, voxelised on a sheared (gantry tilt 20°) stack with uneven spacing: its mesh is
    round in LPS (a mesh that ignored the geometry would be sheared by 20°)."""
    tilt = math.radians(20)
    steps = np.array([1.0, 1.5, 1.0, 2.0, 1.0] * 8)
    z = np.concatenate([[0.0], np.cumsum(steps)]) - 30
    column = np.array([0.0, math.cos(tilt), math.sin(tilt)])
    positions = np.stack([np.full_like(z, -24.0), np.full_like(z, -24.0), z], 1)  # the table moves along z
    volume = Volume(voxels=np.zeros((len(z), 64, 64), np.int16), positions=positions,
                    row_direction=np.array([1.0, 0, 0]), column_direction=column, pixel_spacing=(0.75, 0.75))
    k, j, i = np.meshgrid(*(np.arange(n) for n in volume.shape), indexing="ij")
    lps = volume.index_to_lps(np.stack([k.ravel(), j.ravel(), i.ravel()], 1).astype(float))
    centre = lps.mean(axis=0)
    inside = (np.linalg.norm(lps - centre, axis=1) < 12.0).reshape(volume.shape)
    mask = crop(Structure(1, "ball", (200, 10, 10)), inside)
    (mesh,) = structure_meshes(volume, [mask])
    check_mesh_against_mask(volume, mask, mesh)
    radius = np.linalg.norm(mesh.vertices - centre, axis=1)
    assert radius.min() > 12.0 - 1.2 and radius.max() < 12.0 + 1.2


# -- a SEG written from a real label set ---------------------------------------------------------------------------
def test_a_larger_seg_written_with_highdicom_reads_back_the_same_masks(cases, tmp_path):
    """The 4D-Lung RTSTRUCT's tumour, written as a 99-slice DICOM SEG referencing its CT, reads back voxel for
    voxel, with its name and colour."""
    volume = cases[LUNG.name]
    tumour = only(LUNG / "rtstruct").masks_on(volume)[0]
    tumour = StructureMask(Structure(1, "Tumor_c40", (255, 0, 0)), tumour.start, tumour.mask)
    datasets = sorted((pydicom.dcmread(p) for p in (LUNG / "image").iterdir()),
                      key=lambda ds: float(ds.ImagePositionPatient[2]))
    data = write_seg(tumour, volume, datasets)
    (tmp_path / "tumour.dcm").write_bytes(data)
    back = only(tmp_path / "tumour.dcm")
    assert [(s.name, s.color) for s in back.structures] == [("Tumor_c40", (255, 0, 0))]
    (mask,) = back.masks_on(volume)
    assert mask.start == tumour.start and np.array_equal(mask.mask, tumour.mask)
    assert back.referenced_instances <= {ds.SOPInstanceUID for ds in datasets}
    assert pydicom.dcmread(io.BytesIO(data)).PatientID == datasets[0].PatientID  # the SEG belongs to the study


# -- growing from a seed ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def phantom_volume(tmp_path_factory):
    sys.path.insert(0, str(REPO / "sample_data"))
    import phantom

    params = phantom.PhantomParameters(shape=(100, 160, 160))
    series = phantom.write_phantom(tmp_path_factory.mktemp("phantom"), params)
    _, _, volume, _ = load_volume([series.folder])
    return phantom, volume


def test_grow_from_a_seed_in_the_skull_returns_the_skulls_component_within_the_radius(phantom_volume):
    phantom, volume = phantom_volume
    seed = phantom.LANDMARKS["diploe"][0]
    mask, band = grow_region(volume, seed, name="skull", color=(240, 230, 200), max_radius_mm=250)
    assert (band.low, band.high, band.preset) == (300.5, math.inf, "bone")
    # The component of the bone band that holds the seed, found independently here.
    labels, _ = ndimage.label(volume.voxels >= 300.5, ndimage.generate_binary_structure(3, 1))
    index = tuple(np.rint(lps_to_index(volume, np.array([seed]))[0]).astype(int))
    component = labels == labels[index]
    grown = np.zeros(volume.shape, bool)
    grown[tuple(slice(s, s + n) for s, n in zip(mask.start, mask.mask.shape, strict=True))] = mask.mask
    assert np.array_equal(grown & component, component)  # all of it
    assert not (grown & ~component & (volume.voxels >= 300.5)).any()  # and no other bone
    (mesh,) = structure_meshes(volume, [mask])
    assert np.linalg.norm(mesh.vertices - np.asarray(seed), axis=1).max() <= 250
    check_mesh_against_mask(volume, mask, mesh)
    assert skin_share(volume, mask, -500.5) < 0.2  # a skull does not outline the face


def test_grow_refusals_say_why(phantom_volume):
    phantom, volume = phantom_volume
    seed = phantom.LANDMARKS["diploe"][0]
    with pytest.raises(GrowError, match="more than max_radius_mm 40"):
        grow_region(volume, seed, name="x", color=(1, 2, 3), max_radius_mm=40)
    with pytest.raises(GrowError, match="outside the volume"):
        grow_region(volume, (0.0, 0.0, 400.0), name="x", color=(1, 2, 3))
    with pytest.raises(GrowError, match="air or background"):
        grow_region(volume, phantom.LANDMARKS["air"][0], name="x", color=(1, 2, 3))
    with pytest.raises(GrowError, match="single voxel"):
        point, band = lone_voxel(volume)
        grow_region(volume, point, **band)


def lone_voxel(volume: Volume) -> tuple[np.ndarray, dict]:
    """The LPS point of a voxel inside the head whose value none of its face neighbours has, and the band
    holding only that value."""
    values = volume.voxels.astype(np.int32)
    inner = values[1:-1, 1:-1, 1:-1]
    unique = np.ones(inner.shape, bool)
    for axis in range(3):
        for shift in (1, -1):
            unique &= inner != np.roll(values, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    candidates = np.argwhere(unique & (inner > 0)) + 1
    k, j, i = candidates[len(candidates) // 2]
    value = float(values[k, j, i])
    point = volume.index_to_lps(np.array([[k, j, i]], dtype=float))[0]
    return point, {"name": "x", "color": (1, 2, 3), "low": value, "high": value}


def test_a_soft_tissue_structure_outlines_the_face(phantom_volume):
    phantom, volume = phantom_volume
    mask, band = grow_region(volume, phantom.LANDMARKS["scalp"][0], name="scalp", color=(1, 2, 3))
    assert band.preset == "soft-tissue"
    assert skin_share(volume, mask, -500.5) > 0.2


def test_file_refs_of_zip_members_are_read_too(tmp_path):
    import zipfile

    require_path(LIVER, LIVER.name)
    archive = tmp_path / "seg.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(LIVER / "seg" / "liver.dcm", "export/liver.dcm")
    (segmentation,) = find_segmentations([archive])
    assert segmentation.files == (FileRef(archive, "export/liver.dcm"),)

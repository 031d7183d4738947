"""The consult record: a DICOM Comprehensive 3D SR (TID 1500) of a room's annotations, each citing the event that
made it with an inclusion proof against the signed checkpoint the SR carries. It passes dciodvfy, reads back
with highdicom, carries the source patient and study, is admin-only, and training rooms refuse it."""

from __future__ import annotations

import copy
import io
import json
import math
import subprocess

import highdicom
import numpy as np
import pydicom
import pytest
from conftest import require_tool
from consults import LABEL, MESH, REGULAR, make_annotations, start_consult
from hubtools import admin
from orthanc import orthanc_fixture  # noqa: F401

from server.cli.main import main
from sessions.report import float32

DCIODVFY = "/usr/bin/dciodvfy"


@pytest.fixture
async def consult(aiohttp_server, tmp_path):
    consult = await start_consult(aiohttp_server, tmp_path / "data")
    consult.ids = await make_annotations(consult)
    yield consult
    await consult.http.close()


def dciodvfy(path) -> tuple[list[str], str]:
    """(the error lines, the whole output) of dicom3tools' validator on `path`."""
    require_tool(DCIODVFY, "dciodvfy (Debian package dicom3tools)")
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    output = run.stdout + run.stderr
    return [line for line in output.splitlines() if line.startswith("Error")], output


async def test_the_record_is_a_valid_comprehensive_3d_sr(consult, tmp_path):
    path = tmp_path / "record.dcm"
    path.write_bytes(await consult.report())
    errors, output = dciodvfy(path)
    assert errors == [], output
    assert "Comprehensive3DSR" in output


async def test_the_record_reads_back_with_highdicom_as_the_log_has_it(consult):
    data = await consult.report()
    sr = highdicom.sr.srread(io.BytesIO(data))
    events = {f"a{e['seq']}": e for e in await consult.events()}
    groups = sr.content.get_planar_roi_measurement_groups()
    by_id = {g.tracking_identifier: g for g in groups}
    assert set(by_id) == {consult.ids[k] for k in ("point", "measurement", "stroke", "note", "unicode")}
    frame = consult.headers[0].FrameOfReferenceUID
    for group in groups:
        assert group.roi.frame_of_reference_uid == frame  # geometry is the source series' patient space
    point = by_id[consult.ids["point"]].roi
    assert point.graphic_type.value == "POINT"
    assert point.value.tolist() == [[float32(v) for v in events[consult.ids["point"]]["data"]["position"]]]
    measurement = by_id[consult.ids["measurement"]]
    assert measurement.roi.graphic_type.value == "POLYLINE"
    assert measurement.roi.value.tolist() == [[0.0, 0.0, 0.0], [3.0, 4.0, 10.0]]  # the moved end
    (length,) = measurement.get_measurements()
    assert length.name.meaning == "Length" and length.unit.value == "mm"
    assert length.value == pytest.approx(math.sqrt(125), abs=1e-6)
    stroke = by_id[consult.ids["stroke"]].roi
    want = events[consult.ids["stroke"]]["data"]["points"]
    assert np.array_equal(stroke.value, np.array(want, dtype=np.float32))
    assert by_id[consult.ids["stroke"]].get_measurements() == []


async def test_the_record_carries_the_source_patient_and_study_and_references_the_series(consult):
    sr = pydicom.dcmread(io.BytesIO(await consult.report()))
    source = consult.headers[0]
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "AccessionNumber"):
        assert sr.get(keyword) == source.get(keyword), keyword
    assert sr.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage
    (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
    (series,) = evidence.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series.ReferencedSOPSequence} == {
        h.SOPInstanceUID for h in consult.headers}
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID
    assert sr.CompletionFlag == "PARTIAL"  # the room is still open
    assert LABEL.encode("utf-8") in await consult.report() and sr.SpecificCharacterSet == "ISO_IR 192"


async def test_the_same_checkpoint_gives_the_same_record(consult):
    first, second = await consult.report(), await consult.report()
    assert first == second


async def test_only_the_admin_gets_a_record_and_training_rooms_refuse_it(consult):
    training = await consult.new_room("training")
    room = training["room"]["id"]
    response = await consult.get(f"/api/rooms/{room}/report.dcm")
    assert response.status == 409 and (await response.json())["error"] == "training_room"
    empty = (await consult.new_room())["room"]["id"]
    response = await consult.get(f"/api/rooms/{empty}/report.dcm")
    assert response.status == 409 and (await response.json())["error"] == "nothing_to_report"
    token = training["invites"]["instructor"]["token"]
    for method, path in (("GET", f"/api/rooms/{consult.room}/report.dcm"),
                         ("POST", f"/api/rooms/{consult.room}/report/send")):
        assert (await consult.http.request(method, path)).status == 401
        assert (await consult.http.request(method, path, headers={"Authorization": f"Bearer {token}"})).status == 403
    assert (await consult.get("/api/rooms/rm-nope/report.dcm")).status == 404
    response = await consult.http.post(f"/api/rooms/{consult.room}/report/send", headers=admin(consult.app))
    assert response.status == 503 and (await response.json())["error"] == "no_pacs"
    assert MESH  # the room's mesh is the stand-in over the real series


# ---- theatrum verify --report, and tampering -------------------------------------------------------------

@pytest.fixture
async def exported(consult, tmp_path):
    """(the record's path, the bundle's path) of the consult room, both downloaded after the annotations."""
    record, bundle = tmp_path / "record.dcm", tmp_path / "room.zip"
    record.write_bytes(await consult.report())
    bundle.write_bytes(await consult.bundle())
    return record, bundle


def verify(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["verify", *map(str, argv)])
    return code, capsys.readouterr().out


async def test_verify_report_passes_a_record_and_names_the_tampered_item(exported, consult, capsys, tmp_path):
    record, bundle = exported
    code, out = verify(capsys, bundle, "--report", record)
    assert code == 0, out
    assert f"OK {record}: 6 items, each the annotation it cites, with an inclusion proof against checkpoint" in out
    # Move the measurement's far end by 0.5 mm in the SR.
    ds = pydicom.dcmread(record)
    group = group_of(ds, consult.ids["measurement"])
    region = next(c for c in group.ContentSequence if c.ValueType == "SCOORD3D")
    region.GraphicData = [*region.GraphicData[:5], region.GraphicData[5] + 0.5]
    tampered = tmp_path / "tampered.dcm"
    ds.save_as(tampered)
    code, out = verify(capsys, bundle, "--report", tampered)
    assert code == 1
    number = 1 + [g for g in groups(ds)].index(group)
    assert f"FAILED {tampered}: item {number} ({consult.ids['measurement']} 'cochlear height'): point 2 is" in out
    assert "its length 11.18034 mm is not the distance of its own end points" in out
    code, out = verify(capsys, bundle, "--report", tampered, "--json")
    report = json.loads(out)["report"]
    assert code == 1 and report["ok"] is False and report["items"] == 6 and len(report["problems"]) == 2


async def test_a_record_of_another_room_fails_item_by_item(exported, consult, capsys, tmp_path):
    _, bundle = exported
    other = (await consult.new_room())["room"]["id"]
    await make_annotations(consult, other)
    foreign = tmp_path / "foreign.dcm"
    foreign.write_bytes(await (await consult.get(f"/api/rooms/{other}/report.dcm")).read())
    code, out = verify(capsys, bundle, "--report", foreign)
    assert code == 1
    assert "the record: its checkpoint does not verify under the room's key" in out
    assert out.count(f"it cites room '{other}', not '{consult.room}'") == 6


async def test_a_report_that_is_not_dicom_is_bad_input(exported, capsys, tmp_path):
    _, bundle = exported
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a DICOM file at all")
    capsys.readouterr()
    assert main(["verify", str(bundle), "--report", str(junk)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"theatrum verify: error: {junk}: not a readable DICOM file") and err.count("\n") == 1
    image = tmp_path / "image.dcm"
    image.write_bytes((REGULAR / "I10").read_bytes())
    code, out = verify(capsys, bundle, "--report", image)
    assert code == 1 and "not a Comprehensive 3D SR" in out


def groups(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    """The measurement groups of a record, in order."""
    (container,) = [c for c in ds.ContentSequence if c.ValueType == "CONTAINER"]
    return list(container.ContentSequence)


def group_of(ds: pydicom.Dataset, annotation: str) -> pydicom.Dataset:
    for group in groups(ds):
        if any(c.ValueType == "TEXT" and c.ConceptNameCodeSequence[0].CodeValue == "112039"
               and c.TextValue == annotation for c in group.ContentSequence):
            return group
    raise AssertionError(f"no group for {annotation}")


# ---- random mutations: every one is caught ----------------------------------------------------------------

MUTATIONS = 1400


class Tamper:
    """One random, meaningful change to a record. It returns what it changed ('item N', 'annotation aN' or 'the
    record'; alternatives joined by '|') so that the test can check that the failure names it. Every change
    alters a value the SR can hold (a 32-bit coordinate, text beyond its trailing spaces, a DS length...)."""

    def __init__(self, ds: pydicom.Dataset, rng: np.random.Generator):
        self.ds, self.rng = ds, rng
        self.groups = groups(ds)

    def pick(self, predicate=lambda group: True) -> tuple[int, pydicom.Dataset]:
        choices = [(n, g) for n, g in enumerate(self.groups, start=1) if predicate(g)]
        return choices[self.rng.integers(len(choices))]

    def items(self, group: pydicom.Dataset, value_type: str, code: str | None = None) -> list[pydicom.Dataset]:
        return [c for c in group.ContentSequence if c.ValueType == value_type
                and (code is None or c.ConceptNameCodeSequence[0].CodeValue == code)]

    def has(self, value_type: str, code: str | None = None):
        return lambda group: bool(self.items(group, value_type, code))

    def text(self, value: str) -> str:
        """`value` changed in one character (never only in trailing spaces)."""
        alphabet = "abcXYZ019é—_-"
        position = int(self.rng.integers(len(value) + 1))
        choice = int(self.rng.integers(3))
        if choice == 0 or not value:
            changed = value[:position] + alphabet[self.rng.integers(len(alphabet))] + value[position:]
        elif choice == 1:
            position = min(position, len(value) - 1)
            changed = value[:position] + value[position + 1:]
        else:
            position = min(position, len(value) - 1)
            replacement = next(c for c in self.rng.permutation(list(alphabet)) if c != value[position])
            changed = value[:position] + replacement + value[position + 1:]
        return changed if changed.rstrip(" ") != value.rstrip(" ") else value + "x"

    # -- the mutations --------------------------------------------------------------------------------------

    def coordinate(self) -> str:
        number, group = self.pick(self.has("SCOORD3D"))
        (region,) = self.items(group, "SCOORD3D")
        data = list(region.GraphicData)
        index = int(self.rng.integers(len(data)))
        while True:
            delta = float(self.rng.choice([-1, 1]) * 10 ** self.rng.uniform(-3, 1.7))
            moved = float32(data[index] + delta)
            if moved != data[index]:
                break
        data[index] = moved
        region.GraphicData = data
        return f"item {number}"

    def label(self) -> str:
        number, group = self.pick(self.has("TEXT", "125309"))
        (label,) = self.items(group, "TEXT", "125309")
        label.TextValue = self.text(str(label.TextValue))
        return f"item {number}"

    def note(self) -> str:
        number, group = self.pick(self.has("TEXT", "121106"))
        (comment,) = self.items(group, "TEXT", "121106")
        comment.TextValue = self.text(str(comment.TextValue))
        return f"item {number}"

    def length(self) -> str:
        number, group = self.pick(self.has("NUM"))
        (num,) = self.items(group, "NUM")
        value = num.MeasuredValueSequence[0]
        old = float(value.NumericValue)
        while True:
            new = round(old + float(self.rng.choice([-1, 1]) * 10 ** self.rng.uniform(-6, 1)), 6)
            if new != old and len(repr(new)) <= 16:
                break
        value.NumericValue = repr(new)
        return f"item {number}"

    def drop(self) -> str:
        _, group = self.pick()
        self.container().remove(group)
        identifier = self.items(group, "TEXT", "112039")[0].TextValue
        return f"annotation {identifier}"

    def invent(self) -> str:
        _, group = self.pick()
        twin = copy.deepcopy(group)
        tracking = self.items(twin, "TEXT", "112039")[0]
        if self.rng.integers(2):
            tracking.TextValue = f"a{int(self.rng.integers(100, 100_000))}"  # an annotation the log never had
        self.container().append(twin)  # else the same annotation twice
        return f"item {len(self.container())}"

    def author(self) -> str:
        number, group = self.pick()
        (name,) = self.items(group, "PNAME")
        name.PersonName = self.text(str(name.PersonName).removesuffix("^")) + "^"
        return f"item {number}"

    def time(self) -> str:
        number, group = self.pick()
        value = str(group.ObservationDateTime)
        ms = int(value[15:18])
        shifted = (ms + int(self.rng.integers(1, 999))) % 1000
        group.ObservationDateTime = f"{value[:15]}{shifted:03d}{value[18:]}"
        return f"item {number}"

    def citation(self) -> str:
        number, group = self.pick()
        (cite,) = self.items(group, "TEXT", "THTR1")
        fields = dict(part.split("=", 1) for part in str(cite.TextValue).split(" "))
        which = ["room", "seq", "leaf", "proof"][int(self.rng.integers(4))]
        if which == "room":
            fields["room"] = self.text(fields["room"]).replace(" ", "_").replace("é", "e").replace("—", "-")
        elif which == "seq":
            fields["seq"] = str(int(fields["seq"]) + int(self.rng.choice([-1, 1]) * self.rng.integers(1, 5)))
            if int(fields["seq"]) < 1:
                fields["seq"] = "1" if fields["seq"] != "1" else "2"
        elif which == "leaf":
            fields["leaf"] = flip_hex(fields["leaf"], self.rng)
        else:
            proof = fields["proof"].split(",")
            if self.rng.integers(2):
                index = int(self.rng.integers(len(proof)))
                proof[index] = flip_hex(proof[index], self.rng)
            else:
                del proof[int(self.rng.integers(len(proof)))]
            fields["proof"] = ",".join(proof)
        cite.TextValue = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"item {number}"

    def identity(self) -> str:
        number, group = self.pick()
        tracking = self.items(group, "TEXT", "112039")[0]
        others = [self.items(g, "TEXT", "112039")[0].TextValue for g in self.groups if g is not group]
        tracking.TextValue = others[int(self.rng.integers(len(others)))]
        return f"item {number}"

    def swap(self) -> str:
        (n1, g1), (n2, g2) = self.pick(self.has("SCOORD3D")), self.pick(self.has("SCOORD3D"))
        r1, r2 = self.items(g1, "SCOORD3D")[0], self.items(g2, "SCOORD3D")[0]
        if n1 == n2 or list(r1.GraphicData) == list(r2.GraphicData):
            return self.coordinate()
        r1.GraphicData, r2.GraphicData = list(r2.GraphicData), list(r1.GraphicData)
        return f"item {n1}|item {n2}"  # both changed: a failure may name either

    def unmeasure(self) -> str:
        number, group = self.pick(self.has("NUM"))
        group.ContentSequence.remove(self.items(group, "NUM")[0])
        return f"item {number}"

    def frame(self) -> str:
        number, group = self.pick(self.has("SCOORD3D"))
        (region,) = self.items(group, "SCOORD3D")
        region.ReferencedFrameOfReferenceUID = f"{region.ReferencedFrameOfReferenceUID}.{self.rng.integers(1, 99)}"
        return f"item {number}"

    def checkpoint(self) -> str:
        (note,) = self.items(self.ds, "TEXT", "THTR2")
        lines = str(note.TextValue).split("\n")
        line = int(self.rng.integers(4))  # origin, size, root, time (the signed text) or the signature
        if self.rng.integers(5) == 0:
            line = 5
        lines[line] = self.text(lines[line])
        note.TextValue = "\n".join(lines)
        return "the record"

    def container(self) -> pydicom.Sequence:
        (container,) = [c for c in self.ds.ContentSequence if c.ValueType == "CONTAINER"]
        return container.ContentSequence


def flip_hex(value: str, rng: np.random.Generator) -> str:
    index = int(rng.integers(len(value)))
    digit = "0123456789abcdef"[(int(value[index], 16) + int(rng.integers(1, 16))) % 16]
    return value[:index] + digit + value[index + 1:]


KINDS = ("coordinate", "label", "note", "length", "drop", "invent", "author", "time", "citation", "identity",
         "swap", "unmeasure", "frame", "checkpoint")


async def test_every_one_of_a_thousand_random_mutations_of_the_record_is_caught(exported):
    from server.services.sr import RecordFormatError, read_record
    from sessions.ledger.note import Verifier
    from sessions.ledger.verify import event_lines, verify_bundle
    from sessions.report import check_record

    record, bundle = exported
    report = verify_bundle(bundle)
    assert report.ok
    leaves, verifier = event_lines(bundle), Verifier.from_vkey(report.vkey)
    data = record.read_bytes()

    def problems_of(ds: pydicom.Dataset) -> list[str]:
        try:
            parsed = read_record(ds)
        except RecordFormatError as error:
            return [str(error)]
        return [str(p) for p in check_record(parsed, report.room, leaves, report.signed, verifier)]

    assert problems_of(pydicom.dcmread(io.BytesIO(data))) == []
    rng = np.random.default_rng(20261204)
    done = dict.fromkeys(KINDS, 0)
    missed = []
    for trial in range(MUTATIONS):
        ds = pydicom.dcmread(io.BytesIO(data))
        kind = KINDS[trial % len(KINDS)]
        where = getattr(Tamper(ds, rng), kind)()
        problems = problems_of(ds)
        done[kind] += 1
        if not problems:
            missed.append((trial, kind, where))
        elif not any(p.startswith(tuple(where.split("|"))) for p in problems):
            missed.append((trial, kind, f"{where} not named in {problems}"))
    assert missed == [], f"{len(missed)} of {MUTATIONS} mutations went undetected or unnamed: {missed[:5]}"
    assert sum(done.values()) == MUTATIONS >= 1000 and min(done.values()) >= 90


# ---- back to the PACS (STOW-RS, a real Orthanc) ---------------------------------------------------------

async def test_the_record_goes_to_the_pacs_into_the_patients_study_and_verifies_from_there(
        aiohttp_server, orthanc, tmp_path, capsys):
    consult = await start_consult(aiohttp_server, tmp_path / "data", pacs_url=orthanc.dicomweb_url)
    try:
        await make_annotations(consult)
        response = await consult.http.post(f"/api/rooms/{consult.room}/report/send", headers=admin(consult.app))
        assert response.status == 200, await response.text()
        sent = await response.json()
        assert sent["stored"] is True and sent["items"] == 6 and sent["room"] == consult.room
        bundle = tmp_path / "room.zip"
        bundle.write_bytes(await consult.bundle())
    finally:
        await consult.http.close()
    (found,) = orthanc.post_json("/tools/lookup", sent["sop_instance_uid"])
    assert found["Type"] == "Instance"
    try:
        await check_stored(orthanc, found["ID"], consult, bundle, tmp_path, capsys)
    finally:  # the session's Orthanc holds the phantom as the other PACS tests expect it
        orthanc.delete(f"/instances/{found['ID']}")


async def check_stored(orthanc, instance: str, consult, bundle, tmp_path, capsys) -> None:
    stored = orthanc.get_json(f"/instances/{instance}")
    series = orthanc.get_json(f"/series/{stored['ParentSeries']}")
    study = orthanc.get_json(f"/studies/{series['ParentStudy']}")
    # It joined the patient's own study on the PACS, next to the images it is about.
    assert study["MainDicomTags"]["StudyInstanceUID"] == consult.headers[0].StudyInstanceUID
    assert series["MainDicomTags"]["Modality"] == "SR"
    # What the PACS hands back is still the record, and it still verifies against the room's bundle.
    record = tmp_path / "from-pacs.dcm"
    record.write_bytes(orthanc.get_bytes(f"/instances/{instance}/file"))
    code, out = verify(capsys, bundle, "--report", record)
    assert code == 0, out

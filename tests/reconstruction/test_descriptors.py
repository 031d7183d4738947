"""Clean descriptors (PS3.15 Annex E): descriptions lose every part that matches the patient's name, ids or
birth date, as the header reader reads them; on real files whose descriptions repeat the patient's name."""

from __future__ import annotations

import pytest
from conftest import DICOM, SYNTHETIC_PATIENT, require_path

from reconstruction.descriptors import REDACTED, PatientIdentifiers, clean_descriptor
from reconstruction.series import find_series

PATIENT = PatientIdentifiers("DOE^JANE", ("PID-0042-SECRET", "ACC-777-SECRET"), "19610203")


@pytest.mark.parametrize(("text", "clean"), [
    ("DOE^JANE", REDACTED),
    ("Jane Doe, head CT", "*** ***, head CT"),
    ("doe^jane^^dr", "***^^dr"),
    ("HEAD pid-0042-secret", "HEAD ***"),
    ("CT ACC-777-SECRET/PID-0042-SECRET", "CT ***/***"),
    ("born 1961-02-03", "born ***"),
    ("03.02.1961", REDACTED),
    ("02/03/1961 follow-up", "*** follow-up"),
    ("19610203", REDACTED),
    ("JANET DOES", "JANET DOES"),  # whole words only for name parts
    ("", ""),
])
def test_each_identifier_is_struck_from_a_description(text, clean):
    assert clean_descriptor(text, PATIENT) == clean


def test_one_letter_initials_and_missing_identifiers_change_nothing():
    assert clean_descriptor("J AX T1", PatientIdentifiers("KENT^J")) == "J AX T1"
    assert clean_descriptor("KENT, J.", PatientIdentifiers("KENT^J")) == "***, J."
    assert clean_descriptor("KENT J", PatientIdentifiers("KENT^J")) == REDACTED  # the whole name
    assert clean_descriptor("anything", PatientIdentifiers()) == "anything"
    assert clean_descriptor("CT 42 B", PatientIdentifiers(ids=("42",))) == "CT *** B"
    assert clean_descriptor("CT 420", PatientIdentifiers(ids=("42",))) == "CT 420"  # short ids: whole words


def test_a_real_phantom_whose_series_description_is_the_patient_name_is_listed_as_stars():
    # rt-utils' phantom: PatientName, PatientID and SeriesDescription are all "PHANTOM_EXAMPLE".
    scan = find_series([require_path(DICOM / "rtstruct-phantom-rtutils" / "image", "the rt-utils phantom")])
    (series,) = scan.series
    assert series.description == REDACTED
    assert all(s.instance.series_description == REDACTED for s in series.slices)


def test_a_real_4d_ct_keeps_its_description_but_not_the_patient_name_inside_it():
    # TCIA 4D-Lung: PatientName "P113" inside SeriesDescription "P4^P113^S303^I10349, Gated, 40.0%B".
    folder = require_path(DICOM / "rtstruct-lung-4dlung" / "image", "the 4D-Lung CT")
    scan = find_series(sorted(folder.iterdir())[:3])
    assert scan.series[0].description == "P4^***^S303^I10349, Gated, 40.0%B"


def test_synthetic_identifiers_never_survive_the_header_reader(write_series):
    description = "{PatientName} {PatientID} {AccessionNumber} 1961-02-03 HEAD".format(**SYNTHETIC_PATIENT)
    paths = write_series([(0, 0, z) for z in range(3)], description=description)
    (series,) = find_series(paths).series
    assert series.description == "*** *** *** *** HEAD"
    assert series.study_description == ""

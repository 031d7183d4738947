"""Clean descriptors (DICOM PS3.15 Annex E, "Clean Descriptors Option"): free-text descriptions without the
patient's identifiers.

Scanners and technologists often type the patient's name or id into StudyDescription or SeriesDescription
(a public MR has StudyDescription equal to PatientName and PatientID; a 4D-CT's SeriesDescription is
"P4^P113^S303^…" for patient P113). Every part of a description that matches one of the patient's
identifiers is replaced by ``***``:

- the patient's name as written and each of its components (family, given, middle, prefix, suffix, in every
  component group), matched as whole words (a component of one letter is no identifier and is kept);
- the patient id, the accession number and the other patient ids, anywhere in the text (as whole words when
  shorter than three characters);
- the birth date as DICOM writes it (YYYYMMDD) and in the usual printed forms (1961-02-03, 03.02.1961,
  03/02/1961, 02/03/1961, ...).

Matching ignores case; the longest identifier wins where two overlap. The header reader cleans both
descriptions as it reads them (reconstruction/instance.py), so no listing, summary or log downstream ever
holds the raw text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.dataset import Dataset

from .header_values import BadValue
from .header_values import text as header_text

REDACTED = "***"
MIN_NAME_PART = 2  # a one-letter initial identifies no one, and would strike every such letter in a text
MIN_ANYWHERE = 3  # ids shorter than this are matched as whole words only
_WORD = "A-Za-z0-9"


@dataclass(frozen=True)
class PatientIdentifiers:
    """What identifies the patient in one header: the name, the ids (patient id, accession number) and the
    birth date, as DICOM strings ("" when absent)."""

    name: str = ""
    ids: tuple[str, ...] = ()
    birth_date: str = ""


@functools.lru_cache(maxsize=256)  # every file of a series carries the same identifiers
def identifier_pattern(identifiers: PatientIdentifiers) -> re.Pattern[str] | None:
    """One case-insensitive regex matching every identifier (longest first), or None if there are none."""
    words: set[str] = set()
    anywhere: set[str] = set()
    name = identifiers.name.strip()
    if len(name) >= MIN_NAME_PART:
        words.add(name)
        words.add(" ".join(part for part in re.split(r"[\^=]+", name) if part))
        words.update(part for part in re.split(r"[\^=\s,]+", name) if len(part) >= MIN_NAME_PART)
    for value in (v.strip() for v in identifiers.ids):
        if len(value) >= MIN_ANYWHERE:
            anywhere.add(value)
        elif value:
            words.add(value)
    anywhere.update(_date_forms(identifiers.birth_date.strip()))
    alternatives = [(re.escape(v), False) for v in anywhere] + [(re.escape(v), True) for v in words if v]
    if not alternatives:
        return None
    alternatives.sort(key=lambda item: len(item[0]), reverse=True)
    parts = [rf"(?<![{_WORD}]){text}(?![{_WORD}])" if whole else text for text, whole in alternatives]
    return re.compile("|".join(parts), re.IGNORECASE)


def identifiers_of(ds: Dataset) -> PatientIdentifiers:
    """The identifiers in a header (PatientName, PatientID, AccessionNumber, PatientBirthDate). A value that cannot
    be read is left out: the image stays readable, and its descriptions lose only what can be matched."""

    def value(keyword: str) -> str:
        try:
            return header_text(ds, keyword)
        except BadValue:
            return ""

    return PatientIdentifiers(value("PatientName"), (value("PatientID"), value("AccessionNumber")),
                              value("PatientBirthDate"))


def clean_descriptor(text: str, identifiers: PatientIdentifiers) -> str:
    """`text` with every part that matches one of the patient's identifiers replaced by ``***``."""
    pattern = identifier_pattern(identifiers)
    if not text or pattern is None:
        return text
    return pattern.sub(REDACTED, text)


def _date_forms(value: str) -> Iterable[str]:
    """A DICOM date (YYYYMMDD) as it may be written in free text; nothing for anything else."""
    match = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", value)
    if match is None:
        return ()
    year, month, day = match.groups()
    forms = {value, f"{year}-{month}-{day}", f"{year}.{month}.{day}", f"{year}/{month}/{day}"}
    forms.update(f"{a}{sep}{b}{sep}{year}" for a, b in ((day, month), (month, day)) for sep in ".-/")
    return forms

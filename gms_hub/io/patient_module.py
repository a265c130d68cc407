"""The copy of a source's patient and study attributes that a DICOM SEG carries, made valid without being read
out loud.

Real exports break the DICOM rules for these attributes (a birth date written `1970-01-01`, an age `45 years`, an
anonymiser that removed the Accession Number), and highdicom refuses a SEG built from them, quoting the value.
`seg_source_copy` returns a copy of the source dataset in which every attribute of `PATIENT_STUDY_ATTRIBUTES` is
valid for its VR: a date in ISO form (`YYYY-MM-DD`) is repaired to `YYYYMMDD`; any other invalid value is
dropped (emptied for a type 2 attribute, removed for a type 3 one); a missing type 2 attribute is added empty. The
source file is never changed, and no value is ever logged or put in a message: only the attribute's keyword.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Dict, List, Tuple

from pydicom import config
from pydicom.dataset import Dataset
from pydicom.valuerep import validate_value

logger = logging.getLogger(__name__)

__all__ = ["PATIENT_STUDY_ATTRIBUTES", "seg_source_copy"]

PATIENT_STUDY_ATTRIBUTES: Dict[str, Tuple[str, int]] = {
    # Patient module
    "PatientName": ("PN", 2),
    "PatientID": ("LO", 2),
    "IssuerOfPatientID": ("LO", 3),
    "PatientBirthDate": ("DA", 2),
    "PatientBirthTime": ("TM", 3),
    "PatientSex": ("CS", 2),
    "OtherPatientIDs": ("LO", 3),
    "EthnicGroup": ("SH", 3),
    "PatientComments": ("LT", 3),
    # Patient Study module
    "PatientAge": ("AS", 3),
    "PatientSize": ("DS", 3),
    "PatientWeight": ("DS", 3),
    # General Study module
    "StudyDate": ("DA", 2),
    "StudyTime": ("TM", 2),
    "ReferringPhysicianName": ("PN", 2),
    "StudyID": ("SH", 2),
    "AccessionNumber": ("SH", 2),
    "StudyDescription": ("LO", 3),
}
"""Keyword -> (VR, type) of the patient and study attributes highdicom copies into a SEG."""

_PATIENT_SEX = {"M", "F", "O"}
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_PN_GROUP_MAX = 64


def _valid(keyword: str, vr: str, value) -> bool:
    if value is None or value == "":
        return True
    values = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    for item in values:
        try:
            validate_value(vr, item, config.RAISE)
        except (ValueError, TypeError, KeyError):
            return False
        if vr == "PN" and any(len(group) > _PN_GROUP_MAX for group in str(item).split("=")):
            return False
        if vr == "DA" and str(item) and not _plausible_date(str(item)):
            return False
    if keyword == "PatientSex" and str(value) not in _PATIENT_SEX:
        return False
    return True


def _plausible_date(text: str) -> bool:
    """A DA value highdicom can turn into a date (the VR's pattern alone accepts `20241399`)."""
    import datetime

    try:
        datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return False
    return len(text) == 8


def _repaired(vr: str, value):
    """A repair that keeps the meaning (ISO date -> DA), or `None` when there is none."""
    match = _ISO_DATE.fullmatch(str(value).strip()) if vr == "DA" else None
    if match and _plausible_date("".join(match.groups())):
        return "".join(match.groups())
    return None


def seg_source_copy(dataset: Dataset) -> Tuple[Dataset, List[str]]:
    """A copy of `dataset` whose patient and study attributes a DICOM SEG can carry.

    Args:
        dataset (`pydicom.Dataset`): the source image's dataset (left unchanged).

    Returns:
        `(Dataset, list[str])`: the copy, and one note per attribute changed (`"PatientBirthDate repaired"`,
        `"PatientAge dropped"`, `"AccessionNumber added empty"`), keywords only, never a value.

    Example:
        >>> fixed, notes = seg_source_copy(ds)  # ds.PatientBirthDate == "1970-01-01"
        >>> fixed.PatientBirthDate, notes
        ('19700101', ['PatientBirthDate repaired'])
    """
    fixed = copy.deepcopy(dataset)
    notes: List[str] = []
    with config.disable_value_validation():  # pydicom's own warnings quote the value
        for keyword, (vr, kind) in PATIENT_STUDY_ATTRIBUTES.items():
            if keyword not in fixed:
                if kind == 2:
                    setattr(fixed, keyword, "")
                    notes.append(f"{keyword} added empty")
                continue
            value = fixed[keyword].value
            if _valid(keyword, vr, value):
                continue
            repaired = _repaired(vr, value)
            if repaired is not None:
                fixed[keyword].value = repaired
                notes.append(f"{keyword} repaired")
            elif kind == 2:
                fixed[keyword].value = ""
                notes.append(f"{keyword} dropped")
            else:
                del fixed[keyword]
                notes.append(f"{keyword} dropped")
    return fixed, notes

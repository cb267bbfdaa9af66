"""The attributes the index can match and return, per query level, and how query keys (keywords
or tags) resolve to them.

Levels follow the Study Root information model (PS3.4 C.6.2): PATIENT attributes live on the
patient row and are matched at the study level and below, and so on. An attribute that is a
valid DICOM keyword but is not indexed can still be asked for as a return key: at the image
level it is read from the stored header, elsewhere it comes back with no value.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pacs_common.errors import InvalidArgumentError
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from pacs_indexer.schema import Instance, Patient, Series, Study


class Level(enum.IntEnum):
    """Query/Retrieve levels (PS3.4 C.6.2), ordered from top to bottom."""

    PATIENT = 0
    STUDY = 1
    SERIES = 2
    IMAGE = 3


@dataclass(frozen=True)
class Key:
    """A resolved query key: tag, keyword (``''`` for private/unknown tags) and VR."""

    tag: int
    keyword: str
    vr: str

    @property
    def hex(self) -> str:
        """The tag as eight uppercase hex digits, the DICOM JSON member name (PS3.18 F.2.1)."""
        return f"{self.tag:08X}"


@dataclass(frozen=True)
class IndexedAttribute:
    """An attribute stored in a column of the index."""

    keyword: str
    level: Level
    column: Any
    folded: Any = None
    """Case-folded column, for person names (case-insensitive matching)."""
    normalized: Any = None
    """Normalised column, for times (range matching)."""


_ATTRIBUTES = [
    IndexedAttribute(
        "PatientName", Level.PATIENT, Patient.patient_name, Patient.patient_name_folded
    ),
    IndexedAttribute("PatientID", Level.PATIENT, Patient.patient_id),
    IndexedAttribute("IssuerOfPatientID", Level.PATIENT, Patient.issuer_of_patient_id),
    IndexedAttribute("PatientBirthDate", Level.PATIENT, Patient.patient_birth_date),
    IndexedAttribute("PatientSex", Level.PATIENT, Patient.patient_sex),
    IndexedAttribute("StudyInstanceUID", Level.STUDY, Study.study_instance_uid),
    IndexedAttribute("StudyDate", Level.STUDY, Study.study_date),
    IndexedAttribute("StudyTime", Level.STUDY, Study.study_time, normalized=Study.study_time_norm),
    IndexedAttribute("AccessionNumber", Level.STUDY, Study.accession_number),
    IndexedAttribute("StudyID", Level.STUDY, Study.study_id),
    IndexedAttribute("StudyDescription", Level.STUDY, Study.study_description),
    IndexedAttribute(
        "ReferringPhysicianName",
        Level.STUDY,
        Study.referring_physician_name,
        Study.referring_physician_name_folded,
    ),
    IndexedAttribute("ModalitiesInStudy", Level.STUDY, Study.modalities_in_study),
    IndexedAttribute("NumberOfStudyRelatedSeries", Level.STUDY, Study.number_of_series),
    IndexedAttribute("NumberOfStudyRelatedInstances", Level.STUDY, Study.number_of_instances),
    IndexedAttribute("SeriesInstanceUID", Level.SERIES, Series.series_instance_uid),
    IndexedAttribute("Modality", Level.SERIES, Series.modality),
    IndexedAttribute("SeriesNumber", Level.SERIES, Series.series_number),
    IndexedAttribute("SeriesDescription", Level.SERIES, Series.series_description),
    IndexedAttribute("BodyPartExamined", Level.SERIES, Series.body_part_examined),
    IndexedAttribute("NumberOfSeriesRelatedInstances", Level.SERIES, Series.number_of_instances),
    IndexedAttribute("SOPInstanceUID", Level.IMAGE, Instance.sop_instance_uid),
    IndexedAttribute("SOPClassUID", Level.IMAGE, Instance.sop_class_uid),
    IndexedAttribute("InstanceNumber", Level.IMAGE, Instance.instance_number),
]
INDEXED: dict[str, IndexedAttribute] = {a.keyword: a for a in _ATTRIBUTES}

COMPUTED = frozenset(
    {
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "NumberOfSeriesRelatedInstances",
    }
)
"""Attributes the index computes (PS3.4 C.6.2.1.2, C.6.2.1.3) rather than reads."""

ALWAYS_RETURNED: dict[Level, tuple[str, ...]] = {
    Level.STUDY: (
        "StudyInstanceUID",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    Level.SERIES: ("StudyInstanceUID", "SeriesInstanceUID", "NumberOfSeriesRelatedInstances"),
    Level.IMAGE: ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}
"""Returned in every result: the unique keys of the level and of the levels above it
(PS3.4 C.4.1.2.1), and the level's computed counts."""

_HEX_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")


@lru_cache(maxsize=4096)
def resolve_key(name: str) -> Key:
    """Resolve a keyword (``PatientName``) or tag (``00100010``) to a :class:`Key`.

    Raises:
        InvalidArgumentError: not a DICOM keyword, nor eight hex digits.
    """
    name = name.strip()
    if _HEX_TAG.match(name):
        tag = int(name, 16)
        keyword = keyword_for_tag(tag)
        try:
            vr = dictionary_VR(tag) if keyword else "UN"
        except KeyError:
            vr = "UN"
        return Key(tag, keyword, _single_vr(vr))
    tag_value = tag_for_keyword(name)
    if tag_value is None:
        raise InvalidArgumentError(
            f"unknown attribute {name!r}: use a DICOM keyword or an 8-hex-digit tag"
        )
    return Key(int(tag_value), name, _single_vr(dictionary_VR(tag_value)))


def _single_vr(vr: str) -> str:
    """The first of an ambiguous dictionary VR such as ``US or SS``."""
    return vr.split(" or ", maxsplit=1)[0].strip()


def indexed(key: Key) -> IndexedAttribute | None:
    """The indexed attribute behind ``key``, if the index keeps it."""
    return INDEXED.get(key.keyword) if key.keyword else None

"""Reading HL7 v2 fields into DICOM values: identifiers, names, dates (python-hl7 parses).

python-hl7 gives components as strings (already unescaped); this module only knows which
field and component carries what, and how HL7 data types map onto DICOM value
representations (HL7 v2.5 chapter 2A; DICOM PS3.5 6.2).
"""

from __future__ import annotations

import hl7
from pacs.events.v1 import workflow_events_pb2 as pb

from pacs_hl7.errors import REQUIRED_FIELD_MISSING, Location, content_error


class SegmentView:
    """One segment of a parsed message, read by field and component (1-based, as HL7 counts)."""

    def __init__(self, message: hl7.Message, name: str, sequence: int) -> None:
        self._message = message
        self.name = name
        self.sequence = sequence

    def get(self, field: int, component: int = 1, repetition: int = 1, sub: int = 1) -> str:
        """One (sub)component, unescaped and stripped; ``''`` when absent."""
        try:
            value = self._message.extract_field(
                self.name, self.sequence, field, repetition, component, sub
            )
        except (IndexError, KeyError):
            return ""
        return str(value).strip()

    def require(self, field: int, component: int = 1, what: str = "") -> str:
        """Like :meth:`get`, answering ``AE`` 101 when the value is empty."""
        value = self.get(field, component)
        if not value:
            label = what or f"{self.name}-{field}"
            raise content_error(
                REQUIRED_FIELD_MISSING,
                f"{label} is required",
                Location(self.name, self.sequence, field),
            )
        return value


def segments(message: hl7.Message) -> list[SegmentView]:
    """Every segment in message order, with its occurrence number per segment name."""
    counts: dict[str, int] = {}
    views = []
    for segment in message:
        name = str(segment[0]).strip()
        counts[name] = counts.get(name, 0) + 1
        views.append(SegmentView(message, name, counts[name]))
    return views


def person_name(view: SegmentView, field: int, first_component: int = 1) -> str:
    """An XPN (``first_component`` 1) or XCN (2) as a DICOM PN: family^given^middle^prefix^
    suffix (HL7 orders them family, given, middle, suffix, prefix)."""
    family = view.get(field, first_component)
    given = view.get(field, first_component + 1)
    middle = view.get(field, first_component + 2)
    suffix = view.get(field, first_component + 3)
    prefix = view.get(field, first_component + 4)
    return "^".join((family, given, middle, prefix, suffix)).rstrip("^")


def patient_of(pid: SegmentView) -> pb.Patient:
    """The patient of a PID segment: PID-3 (first identifier and its assigning authority),
    PID-5, PID-7, PID-8 (PS3.3 C.7.1.1 Patient Module)."""
    sex = pid.get(8).upper()
    return pb.Patient(
        patient_id=pid.require(3, what="PID-3 patient identifier"),
        issuer_of_patient_id=pid.get(3, 4),
        patient_name=person_name(pid, 5),
        patient_birth_date=pid.get(7)[:8],
        patient_sex=sex if sex in ("M", "F", "O") else "",
    )


def split_datetime(value: str) -> tuple[str, str]:
    """An HL7 DTM/TS (YYYYMMDDHHMMSS.SSSS+ZZZZ) as DICOM DA and TM (the offset dropped: the
    worklist matches on the modality's local schedule)."""
    value = value.split("+", maxsplit=1)[0].split("-", maxsplit=1)[0]
    return value[:8], value[8:]

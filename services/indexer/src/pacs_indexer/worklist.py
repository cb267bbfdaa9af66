"""The Modality Worklist: scheduled procedure steps from HL7 orders, matched and returned as
PS3.4 K.6 worklist items.

Steps are placed, changed and cancelled by the events the hl7 service publishes (ORM^O01 /
OMI^O23) and progressed by MPPS (:mod:`pacs_indexer.mpps`). A query matches on the keys PS3.4
K.6.1.2 requires an SCP to support (Scheduled Station AE Title, Scheduled Procedure Step Start
Date and Time, Modality, Scheduled Performing Physician's Name, Patient's Name, Patient ID) and
on Accession Number, Requested Procedure ID, Study Instance UID, Scheduled Procedure Step ID
and Status; other keys are return keys only (universal matching, K.2.2.1). Only SCHEDULED
steps are listed unless the query asks for a status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pacs.events.v1 import workflow_events_pb2 as events
from pacs_common.errors import InvalidArgumentError
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.uid import generate_uid
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from pacs_indexer.attributes import IndexedAttribute, Key, Level
from pacs_indexer.dicom_time import normalize_datetime, normalize_time

# _between: the inclusive range that treats an empty value as no match (C.2.2.2.5), shared.
from pacs_indexer.matching import _between, condition, date_bounds, time_bounds
from pacs_indexer.records import fold_person_name, now_rfc3339
from pacs_indexer.schema import ScheduledStep

S = ScheduledStep
ACTIVE = "SCHEDULED"

_MATCHABLE = {
    "PatientName": IndexedAttribute(
        "PatientName", Level.STUDY, S.patient_name, S.patient_name_folded
    ),
    "PatientID": IndexedAttribute("PatientID", Level.STUDY, S.patient_id),
    "IssuerOfPatientID": IndexedAttribute("IssuerOfPatientID", Level.STUDY, S.issuer_of_patient_id),
    "PatientBirthDate": IndexedAttribute("PatientBirthDate", Level.STUDY, S.patient_birth_date),
    "PatientSex": IndexedAttribute("PatientSex", Level.STUDY, S.patient_sex),
    "AccessionNumber": IndexedAttribute("AccessionNumber", Level.STUDY, S.accession_number),
    "RequestedProcedureID": IndexedAttribute(
        "RequestedProcedureID", Level.STUDY, S.requested_procedure_id
    ),
    "StudyInstanceUID": IndexedAttribute("StudyInstanceUID", Level.STUDY, S.study_instance_uid),
    "ScheduledStationAETitle": IndexedAttribute(
        "ScheduledStationAETitle", Level.STUDY, S.station_ae_title
    ),
    "Modality": IndexedAttribute("Modality", Level.STUDY, S.modality),
    "ScheduledProcedureStepID": IndexedAttribute(
        "ScheduledProcedureStepID", Level.STUDY, S.step_id
    ),
    "ScheduledProcedureStepStartDate": IndexedAttribute(
        "ScheduledProcedureStepStartDate", Level.STUDY, S.start_date
    ),
    "ScheduledProcedureStepStartTime": IndexedAttribute(
        "ScheduledProcedureStepStartTime", Level.STUDY, S.start_time, normalized=S.start_time_norm
    ),
    "ScheduledPerformingPhysicianName": IndexedAttribute(
        "ScheduledPerformingPhysicianName",
        Level.STUDY,
        S.performing_physician,
        S.performing_physician_folded,
    ),
    "ScheduledProcedureStepStatus": IndexedAttribute(
        "ScheduledProcedureStepStatus", Level.STUDY, S.status
    ),
}


def _key(keyword: str) -> Key:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return Key(tag, keyword, dictionary_VR(tag))


# ---------------------------------------------------------------- applying order events


def _patient_columns(patient: events.Patient) -> dict[str, str]:
    return {
        "patient_id": patient.patient_id,
        "issuer_of_patient_id": patient.issuer_of_patient_id,
        "patient_name": patient.patient_name,
        "patient_name_folded": fold_person_name(patient.patient_name),
        "patient_birth_date": patient.patient_birth_date,
        "patient_sex": patient.patient_sex,
    }


def _find_step(
    session: Session, tenant: str, order_number: str, step_id: str
) -> ScheduledStep | None:
    return session.execute(
        select(S).where(S.tenant == tenant, S.order_number == order_number, S.step_id == step_id)
    ).scalar_one_or_none()


def schedule(
    session: Session, tenant: str, patient: events.Patient, step: events.ScheduledStep
) -> None:
    """Place (or change) a step: insert it, or replace its values; a new or changed order is
    SCHEDULED again unless the modality already started it."""
    row = _find_step(session, tenant, step.order_number, step.step_id)
    if row is None:
        row = S(tenant=tenant, order_number=step.order_number, step_id=step.step_id, status=ACTIVE)
        session.add(row)
    elif row.status in ("CANCELLED", "DISCONTINUED"):
        row.status = ACTIVE
    study_uid = (
        step.study_instance_uid
        or row.study_instance_uid
        or generate_uid(entropy_srcs=[tenant, step.order_number, step.step_id])
    )
    values: dict[str, Any] = {
        **_patient_columns(patient),
        "accession_number": step.accession_number,
        "requested_procedure_id": step.requested_procedure_id,
        "study_instance_uid": study_uid,
        "modality": step.modality,
        "station_ae_title": step.station_ae_title,
        "start_date": step.start_date,
        "start_time": step.start_time,
        "start_time_norm": normalize_time(step.start_time) if step.start_time else "",
        "start_datetime_norm": normalize_datetime(step.start_date, step.start_time),
        "performing_physician": step.performing_physician,
        "performing_physician_folded": fold_person_name(step.performing_physician),
        "updated_time": now_rfc3339(),
        "details": json.dumps(
            {
                "procedure_code_value": step.procedure_code_value,
                "procedure_code_scheme": step.procedure_code_scheme,
                "procedure_description": step.procedure_description,
                "referring_physician": step.referring_physician,
            }
        ),
    }
    for name, value in values.items():
        setattr(row, name, value)


def cancel(session: Session, tenant: str, step: events.ScheduledStep, discontinued: bool) -> int:
    """Cancel (CA) or discontinue (DC) an order's steps (all of them when no step ID was
    sent); returns how many changed."""
    query = select(S).where(S.tenant == tenant, S.order_number == step.order_number)
    rows = session.execute(query).scalars().all()
    explicit = [r for r in rows if r.step_id == step.step_id]
    changed = 0
    for row in explicit or rows:
        row.status = "DISCONTINUED" if discontinued else "CANCELLED"
        row.updated_time = now_rfc3339()
        changed += 1
    return changed


def repoint_patient(
    session: Session, tenant: str, source: tuple[str, str], target: events.Patient | None
) -> int:
    """Give the steps of patient ``source`` (ID, issuer) the ``target``'s identity and
    demographics (ADT A40), or refresh their demographics from ``target`` (A08)."""
    rows = (
        session.execute(
            select(S).where(
                S.tenant == tenant, S.patient_id == source[0], S.issuer_of_patient_id == source[1]
            )
        )
        .scalars()
        .all()
    )
    for row in rows:
        if target is not None:
            for name, value in _patient_columns(target).items():
                if value or name in ("patient_id", "issuer_of_patient_id"):
                    setattr(row, name, value)
            row.updated_time = now_rfc3339()
    return len(rows)


# ---------------------------------------------------------------- finding


@dataclass(frozen=True)
class WorklistResult:
    """One page of worklist items (DICOM JSON) and the number of matches."""

    datasets: list[dict[str, Any]]
    total_count: int


def find_worklist(
    session: Session,
    tenant: str,
    match: Mapping[str, str],
    *,
    limit: int,
    offset: int,
    fuzzy: bool,
    include_inactive: bool = False,
) -> WorklistResult:
    """The steps of ``tenant`` matching ``match`` (keywords to DICOM matching values).

    Raises:
        InvalidArgumentError: a value is not a valid matching value for its VR.
    """
    if not tenant:
        raise InvalidArgumentError("tenant is required")
    conditions: list[ColumnElement[bool]] = [S.tenant == tenant]
    values = {k: v.strip() for k, v in match.items() if k in _MATCHABLE}
    date = values.get("ScheduledProcedureStepStartDate", "")
    time = values.get("ScheduledProcedureStepStartTime", "")
    if date not in ("", "*") and time not in ("", "*"):
        # Start date and time are one date-time range (PS3.4 C.2.2.2.5.1; the way modalities
        # ask for "today from 08:00 to 12:00").
        conditions.append(_combined(date, time))
        values.pop("ScheduledProcedureStepStartDate")
        values.pop("ScheduledProcedureStepStartTime")
    for keyword, value in values.items():
        found = condition(_key(keyword), _MATCHABLE[keyword], value, fuzzy)
        if found is not None:
            conditions.append(found)
    if values.get("ScheduledProcedureStepStatus", "") in ("", "*") and not include_inactive:
        conditions.append(S.status == ACTIVE)
    total = session.execute(select(func.count()).select_from(S).where(*conditions)).scalar_one()
    rows = (
        session.execute(
            select(S)
            .where(*conditions)
            .order_by(S.start_datetime_norm, S.id)
            .limit(limit)
            .offset(offset)
        )
        .scalars()
        .all()
    )
    return WorklistResult([item_of(row) for row in rows], int(total))


def _combined(date: str, time: str) -> ColumnElement[bool]:
    date_key = _key("ScheduledProcedureStepStartDate")
    time_key = _key("ScheduledProcedureStepStartTime")
    date_low, date_high = date_bounds(date_key, date)
    time_low, time_high = time_bounds(time_key, time)
    low = normalize_datetime(date_low, time_low) if date_low else ""
    high = normalize_datetime(date_high, time_high, upper=True) if date_high else ""
    return _between(S.start_datetime_norm, low, high)


def _el(vr: str, value: Any) -> dict[str, Any]:
    if value in ("", None):
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": value}]}
    return {"vr": vr, "Value": [value]}


def _code_item(value: str, scheme: str, meaning: str) -> dict[str, Any]:
    return {
        "00080100": _el("SH", value),
        "00080102": _el("SH", scheme),
        "00080104": _el("LO", meaning),
    }


def item_of(row: ScheduledStep) -> dict[str, Any]:
    """The worklist item of a step as DICOM JSON (PS3.4 Table K.6-1 return keys)."""
    details = json.loads(row.details or "{}")
    code = (
        [
            _code_item(
                details["procedure_code_value"],
                details.get("procedure_code_scheme", ""),
                details.get("procedure_description", ""),
            )
        ]
        if details.get("procedure_code_value")
        else []
    )
    step = {
        "00400001": _el("AE", row.station_ae_title),  # Scheduled Station AE Title
        "00400002": _el("DA", row.start_date),
        "00400003": _el("TM", row.start_time),
        "00080060": _el("CS", row.modality),
        "00400006": _el("PN", row.performing_physician),
        "00400007": _el("LO", details.get("procedure_description", "")),
        "00400008": {"vr": "SQ", "Value": code} if code else {"vr": "SQ"},
        "00400009": _el("SH", row.step_id),
        "00400010": {"vr": "SH"},  # Scheduled Station Name
        "00400011": {"vr": "SH"},  # Scheduled Procedure Step Location
        "00400020": _el("CS", row.status),
        "00400012": {"vr": "LO"},  # Pre-Medication
        "00321070": {"vr": "LO"},  # Requested Contrast Agent
    }
    return {
        "00080050": _el("SH", row.accession_number),
        "00080090": _el("PN", details.get("referring_physician", "")),
        "00081080": {"vr": "LO"},
        "00081110": {"vr": "SQ"},  # Referenced Study Sequence
        "00081120": {"vr": "SQ"},  # Referenced Patient Sequence
        "00100010": _el("PN", row.patient_name),
        "00100020": _el("LO", row.patient_id),
        "00100021": _el("LO", row.issuer_of_patient_id),
        "00100030": _el("DA", row.patient_birth_date),
        "00100040": _el("CS", row.patient_sex),
        "0020000D": _el("UI", row.study_instance_uid),
        "00321060": _el("LO", details.get("procedure_description", "")),
        "00321064": {"vr": "SQ", "Value": code} if code else {"vr": "SQ"},
        "00401001": _el("SH", row.requested_procedure_id),
        "00401003": {"vr": "SH"},  # Requested Procedure Priority
        "00401004": {"vr": "LO"},  # Patient Transport Arrangements
        "00380010": {"vr": "LO"},  # Admission ID
        "00400100": {"vr": "SQ", "Value": [step]},
    }

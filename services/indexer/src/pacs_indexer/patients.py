"""Patient updates and merges as index operations (what HL7 ADT A08 and A40 ask for).

The patient registry is the authority on demographics: after an update or a merge the patient
row is *locked*, so images that still carry the old values do not overwrite it, and every
stored header of the patient (and of instances indexed later) shows the registry's values. A
merge moves the source patient's studies to the target, and instances that arrive later with
the source's PatientID are filed under the target. Each operation is recorded in
``patient_merges`` with the demographics it replaced.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pacs_common.errors import InvalidArgumentError, NotFoundError
from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.orm import Session

from pacs_indexer.records import fold_person_name, now_rfc3339, patient_key_of
from pacs_indexer.schema import Instance, Patient, PatientMerge, Series, Study
from pacs_indexer.statements import INSTANCES

_MAX_CHAIN = 16


@dataclass(frozen=True)
class Demographics:
    """The patient attributes the registry controls."""

    patient_id: str
    issuer_of_patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""

    def patch(self, header_json: str) -> str:
        """A stored DICOM JSON header with these values in its Patient Module (PS3.3
        C.7.1.1)."""
        header: dict[str, Any] = json.loads(header_json)
        for tag, vr, value in (
            ("00100010", "PN", {"Alphabetic": self.patient_name} if self.patient_name else None),
            ("00100020", "LO", self.patient_id or None),
            ("00100021", "LO", self.issuer_of_patient_id or None),
            ("00100030", "DA", self.patient_birth_date or None),
            ("00100040", "CS", self.patient_sex or None),
        ):
            header[tag] = {"vr": vr, "Value": [value]} if value is not None else {"vr": vr}
        return json.dumps(dict(sorted(header.items())), separators=(",", ":"))


def _demographics(patient: Patient) -> Demographics:
    return Demographics(
        patient.patient_id,
        patient.issuer_of_patient_id,
        patient.patient_name,
        patient.patient_birth_date,
        patient.patient_sex,
    )


def _find(session: Session, tenant: str, patient_id: str, issuer: str) -> Patient | None:
    if not tenant or not patient_id:
        raise InvalidArgumentError("tenant and PatientID are required")
    return session.execute(
        select(Patient).where(
            Patient.tenant == tenant, Patient.patient_key == patient_key_of(patient_id, issuer)
        )
    ).scalar_one_or_none()


def _record(
    session: Session, operation: str, *, tenant: str, source: str, target: str, previous: Patient
) -> PatientMerge:
    entry = PatientMerge(
        tenant=tenant,
        operation=operation,
        source_patient_key=source,
        target_patient_key=target,
        recorded_time=now_rfc3339(),
        previous=json.dumps(_demographics(previous).__dict__),
    )
    session.add(entry)
    return entry


def update_patient(
    session: Session,
    tenant: str,
    patient_id: str,
    issuer_of_patient_id: str = "",
    *,
    name: str | None = None,
    birth_date: str | None = None,
    sex: str | None = None,
) -> None:
    """Correct a patient's demographics (``None``: keep the value).

    Raises:
        NotFoundError: no such patient in the tenant's index.
    """
    patient = _find(session, tenant, patient_id, issuer_of_patient_id)
    if patient is None:
        raise NotFoundError("no such patient in this tenant")
    _record(
        session,
        "update",
        tenant=tenant,
        source=patient.patient_key,
        target=patient.patient_key,
        previous=patient,
    )
    if name is not None:
        patient.patient_name = name
        patient.patient_name_folded = fold_person_name(name)
    if birth_date is not None:
        patient.patient_birth_date = birth_date
    if sex is not None:
        patient.patient_sex = sex
    patient.demographics_locked = True
    session.flush()
    _patch_headers(session, patient)


def merge_patients(
    session: Session,
    tenant: str,
    source: tuple[str, str],
    target: tuple[str, str],
) -> int:
    """Merge patient ``source`` (PatientID, issuer) into ``target``.

    Returns:
        The number of studies moved.

    Raises:
        NotFoundError: the source patient is not indexed.
        InvalidArgumentError: source and target are the same patient.
    """
    if source == target:
        raise InvalidArgumentError("a patient cannot be merged into itself")
    old = _find(session, tenant, *source)
    if old is None:
        raise NotFoundError("the source patient is not indexed in this tenant")
    new = _find(session, tenant, *target)
    entry = _record(
        session,
        "merge",
        tenant=tenant,
        source=old.patient_key,
        target=patient_key_of(*target),
        previous=old,
    )
    if new is None:
        # The target is not indexed yet: the source row becomes the target.
        old.patient_key = patient_key_of(*target)
        old.patient_id, old.issuer_of_patient_id = target
        new = old
        moved = len(old.studies)
    else:
        moved = len(old.studies)
        session.execute(
            update(Study)
            .where(Study.patient_pk == old.id)
            .values(patient_pk=new.id)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            delete(Patient).where(Patient.id == old.id).execution_options(synchronize_session=False)
        )
    entry.studies_moved = moved
    new.demographics_locked = True
    session.flush()
    session.expire_all()
    _patch_headers(session, new)
    return moved


def _patch_headers(session: Session, patient: Patient) -> None:
    """Rewrite the Patient Module of every stored header of the patient."""
    demographics = _demographics(patient)
    rows = session.execute(
        select(Instance.id, Instance.dicom_json)
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .where(Study.patient_pk == patient.id)
    ).all()
    table = INSTANCES
    if rows:
        session.execute(
            update(table)
            .where(table.c.id == bindparam("pk"))
            .values(dicom_json=bindparam("header")),
            [{"pk": pk, "header": demographics.patch(text)} for pk, text in rows],
        )


def merged_into(conn: Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Where patients merged away went: (tenant, source key) -> the final target key.

    One query per tenant when nothing was merged (the usual case); merge chains (A into B,
    later B into C) are followed.
    """
    by_tenant: dict[str, set[str]] = {}
    for tenant, key in keys:
        by_tenant.setdefault(tenant, set()).add(key)
    result: dict[tuple[str, str], str] = {}
    for tenant, wanted in by_tenant.items():
        targets: dict[str, str] = {}
        frontier = set(wanted)
        for _ in range(_MAX_CHAIN):
            rows = conn.execute(
                select(PatientMerge.source_patient_key, PatientMerge.target_patient_key)
                .where(
                    PatientMerge.tenant == tenant,
                    PatientMerge.operation == "merge",
                    PatientMerge.source_patient_key.in_(sorted(frontier)),
                )
                .order_by(PatientMerge.id)
            ).all()
            found = {source: target for source, target in rows if source != target}
            if not found:
                break
            targets.update(found)
            frontier = set(found.values()) - set(targets)
            if not frontier:
                break
        for key in wanted:
            current, steps = key, 0
            while current in targets and steps < _MAX_CHAIN:
                current, steps = targets[current], steps + 1
            if current != key:
                result[(tenant, key)] = current
    return result


def locked_demographics(conn: Connection, patient_pks: Iterable[int]) -> Mapping[int, Demographics]:
    """The registry-controlled demographics of those patients that have them."""
    pks = sorted(set(patient_pks))
    if not pks:
        return {}
    rows = conn.execute(
        select(
            Patient.id,
            Patient.patient_id,
            Patient.issuer_of_patient_id,
            Patient.patient_name,
            Patient.patient_birth_date,
            Patient.patient_sex,
        ).where(Patient.id.in_(pks), Patient.demographics_locked.is_(True))
    ).all()
    return {row[0]: Demographics(*row[1:]) for row in rows}

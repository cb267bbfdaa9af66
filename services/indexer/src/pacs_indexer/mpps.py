"""Modality Performed Procedure Step (PS3.4 F.7) applied to the index.

N-CREATE records a step IN PROGRESS and marks the scheduled steps it names (Scheduled Step
Attributes Sequence: Accession Number, Scheduled Procedure Step ID, Study Instance UID)
STARTED; N-SET merges its attributes into the recorded step and, when it sets COMPLETED or
DISCONTINUED, ends those scheduled steps the same way (dcm4chee-arc maps them likewise,
dcm4chee-arc-light #257). A completed or discontinued step can no longer be changed
(PS3.4 F.7.2.2.2: "Performed Procedure Step Object may no longer be updated").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pacs.type.v1 import instance_pb2
from pacs_common.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from pydicom.dataset import Dataset
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pacs_indexer.records import now_rfc3339
from pacs_indexer.schema import Instance, PerformedStep, ScheduledStep

IN_PROGRESS = "IN PROGRESS"
FINAL = {"COMPLETED": "COMPLETED", "DISCONTINUED": "DISCONTINUED"}
"""PPS status -> the scheduled step's status."""


@dataclass
class Recorded:
    """What one MPPS operation did, for the response and the event."""

    status: str
    steps_updated: int
    accession_number: str = ""
    step_id: str = ""
    study_instance_uid: str = ""
    instances: list[instance_pb2.InstanceRef] = field(default_factory=list)
    all_instances_stored: bool = False


def _dataset(text: str) -> Dataset:
    try:
        return Dataset.from_json(text or "{}")
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidArgumentError(f"the MPPS attributes are not valid DICOM JSON: {exc}") from exc


def create(session: Session, tenant: str, uid: str, text: str) -> Recorded:
    """N-CREATE.

    Raises:
        AlreadyExistsError: an MPPS with this SOP Instance UID exists (0x0111).
        InvalidArgumentError: status other than IN PROGRESS (0x0106).
    """
    dataset = _dataset(text)
    status = str(dataset.get("PerformedProcedureStepStatus", "")).strip()
    if status != IN_PROGRESS:
        raise InvalidArgumentError("an MPPS N-CREATE must have status IN PROGRESS")
    existing = session.execute(
        select(PerformedStep).where(
            PerformedStep.tenant == tenant, PerformedStep.sop_instance_uid == uid
        )
    ).scalar_one_or_none()
    if existing is not None:
        raise AlreadyExistsError("this performed procedure step exists already")
    session.add(
        PerformedStep(
            tenant=tenant,
            sop_instance_uid=uid,
            status=status,
            updated_time=now_rfc3339(),
            dataset=dataset.to_json(),
        )
    )
    return _progress(session, tenant, dataset, "STARTED", status)


def update(session: Session, tenant: str, uid: str, text: str) -> Recorded:
    """N-SET.

    Raises:
        NotFoundError: no such MPPS (0x0112).
        FailedPreconditionError: it is COMPLETED or DISCONTINUED already (0x0110).
    """
    changes = _dataset(text)
    row = session.execute(
        select(PerformedStep).where(
            PerformedStep.tenant == tenant, PerformedStep.sop_instance_uid == uid
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError("no such performed procedure step")
    if row.status in FINAL:
        raise FailedPreconditionError("Performed Procedure Step Object may no longer be updated")
    dataset = _dataset(row.dataset)
    for element in changes:
        dataset[element.tag] = element
    status = str(dataset.get("PerformedProcedureStepStatus", "")).strip()
    if status not in (IN_PROGRESS, *FINAL):
        raise InvalidArgumentError(f"Performed Procedure Step Status {status!r} is not valid")
    row.status = status
    row.dataset = dataset.to_json()
    row.updated_time = now_rfc3339()
    scheduled = FINAL.get(status)
    if scheduled is None:
        return Recorded(status, 0)
    recorded = _progress(session, tenant, dataset, scheduled, status)
    recorded.instances = _instances(tenant, dataset, recorded.study_instance_uid)
    if status == "COMPLETED" and recorded.instances:
        recorded.all_instances_stored = _all_indexed(session, tenant, recorded.instances)
    return recorded


def _all_indexed(session: Session, tenant: str, refs: list[instance_pb2.InstanceRef]) -> bool:
    """Whether every reported instance is in the index (stored and announced)."""
    uids = sorted({ref.sop_instance_uid for ref in refs})
    found = session.execute(
        select(func.count())
        .select_from(Instance)
        .where(Instance.tenant == tenant, Instance.sop_instance_uid.in_(uids))
    ).scalar_one()
    return int(found) == len(uids)


def _progress(session: Session, tenant: str, dataset: Dataset, to: str, status: str) -> Recorded:
    recorded = Recorded(status, 0)
    for item in dataset.get("ScheduledStepAttributesSequence", []):
        accession = str(item.get("AccessionNumber", "")).strip()
        step_id = str(item.get("ScheduledProcedureStepID", "")).strip()
        study = str(item.get("StudyInstanceUID", "")).strip()
        recorded.accession_number = recorded.accession_number or accession
        recorded.step_id = recorded.step_id or step_id
        recorded.study_instance_uid = recorded.study_instance_uid or study
        if not (accession or step_id):
            continue  # an unscheduled step (PS3.4 F.7.2.1: no worklist item behind it)
        query = select(ScheduledStep).where(ScheduledStep.tenant == tenant)
        if accession:
            query = query.where(ScheduledStep.accession_number == accession)
        if step_id:
            query = query.where(ScheduledStep.step_id == step_id)
        for step in session.execute(query).scalars():
            step.status = to
            step.updated_time = now_rfc3339()
            recorded.steps_updated += 1
    return recorded


def _instances(tenant: str, dataset: Dataset, study: str) -> list[instance_pb2.InstanceRef]:
    refs = []
    for series in dataset.get("PerformedSeriesSequence", []):
        series_uid = str(series.get("SeriesInstanceUID", ""))
        for image in series.get("ReferencedImageSequence", []):
            refs.append(
                instance_pb2.InstanceRef(
                    tenant=tenant,
                    study_instance_uid=study,
                    series_instance_uid=series_uid,
                    sop_instance_uid=str(image.get("ReferencedSOPInstanceUID", "")),
                    sop_class_uid=str(image.get("ReferencedSOPClassUID", "")),
                )
            )
    return refs

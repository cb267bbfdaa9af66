"""Storing and finding the measurements of structured reports (:mod:`pacs_indexer.reports`)."""

from __future__ import annotations

from collections.abc import Sequence

from pacs.events.v1 import workflow_events_pb2 as events
from pacs.query.v1 import query_service_pb2 as query_pb
from pacs.type.v1 import instance_pb2
from pacs_common.errors import InvalidArgumentError, NotFoundError
from pydicom.dataset import Dataset
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from pacs_indexer.reports import MeasurementRow, render_text, title
from pacs_indexer.schema import Instance, SrMeasurement


def replace_measurements(
    session: Session, tenant: str, dataset: Dataset, rows: Sequence[MeasurementRow]
) -> None:
    """Index one report's measurements, replacing what an earlier version had (idempotent)."""
    sop = str(dataset.get("SOPInstanceUID", ""))
    session.execute(
        delete(SrMeasurement).where(
            SrMeasurement.tenant == tenant, SrMeasurement.sop_instance_uid == sop
        )
    )
    session.add_all(
        SrMeasurement(
            tenant=tenant,
            sop_instance_uid=sop,
            series_instance_uid=str(dataset.get("SeriesInstanceUID", "")),
            study_instance_uid=str(dataset.get("StudyInstanceUID", "")),
            sop_class_uid=str(dataset.get("SOPClassUID", "")),
            patient_id=str(dataset.get("PatientID", "")),
            ordinal=row.ordinal,
            concept_code_value=row.concept_code_value,
            concept_code_scheme=row.concept_code_scheme,
            concept_code_meaning=row.concept_code_meaning,
            value=row.value,
            units_code_value=row.units_code_value,
            units_code_meaning=row.units_code_meaning,
            finding_site=row.finding_site,
            tracking_identifier=row.tracking_identifier,
            referenced_sop_instance_uids="\\".join(row.referenced_sop_instance_uids),
        )
        for row in rows
    )


def measurement_message(row: MeasurementRow | SrMeasurement) -> events.Measurement:
    """The protobuf form of one measurement."""
    refs = row.referenced_sop_instance_uids
    uids = refs.split("\\") if isinstance(refs, str) else list(refs)
    return events.Measurement(
        concept_code_value=row.concept_code_value,
        concept_code_scheme=row.concept_code_scheme,
        concept_code_meaning=row.concept_code_meaning,
        value=row.value,
        units_code_value=row.units_code_value,
        units_code_meaning=row.units_code_meaning,
        finding_site=row.finding_site,
        tracking_identifier=row.tracking_identifier,
        referenced_sop_instance_uids=[u for u in uids if u],
    )


def report_event(
    tenant: str, dataset: Dataset, rows: Sequence[MeasurementRow]
) -> events.ReportIndexed:
    """The ReportIndexed event of one report."""
    flags = [str(dataset.get(k, "")) for k in ("CompletionFlag", "VerificationFlag")]
    name = dataset.get("PatientName")
    return events.ReportIndexed(
        instance=instance_pb2.InstanceRef(
            tenant=tenant,
            study_instance_uid=str(dataset.get("StudyInstanceUID", "")),
            series_instance_uid=str(dataset.get("SeriesInstanceUID", "")),
            sop_instance_uid=str(dataset.get("SOPInstanceUID", "")),
            sop_class_uid=str(dataset.get("SOPClassUID", "")),
        ),
        patient=events.Patient(
            patient_id=str(dataset.get("PatientID", "")),
            issuer_of_patient_id=str(dataset.get("IssuerOfPatientID", "")),
            patient_name=str(name) if name else "",
            patient_birth_date=str(dataset.get("PatientBirthDate", "")),
            patient_sex=str(dataset.get("PatientSex", "")),
        ),
        accession_number=str(dataset.get("AccessionNumber", "")),
        title=title(dataset),
        text=render_text(dataset),
        measurements=[measurement_message(row) for row in rows],
        status="/".join(flags),
    )


def find_measurements(
    session: Session, tenant: str, request: query_pb.FindMeasurementsRequest, limit: int
) -> list[query_pb.MeasurementRecord]:
    """Measurements of ``tenant`` matching every field ``request`` sets."""
    if not tenant:
        raise InvalidArgumentError("tenant is required")
    query = select(SrMeasurement).where(SrMeasurement.tenant == tenant)
    for column, value in (
        (SrMeasurement.study_instance_uid, request.study_instance_uid),
        (SrMeasurement.patient_id, request.patient_id),
        (SrMeasurement.sop_instance_uid, request.sop_instance_uid),
        (SrMeasurement.concept_code_value, request.concept_code_value),
    ):
        if value:
            query = query.where(column == value)
    rows = session.execute(
        query.order_by(SrMeasurement.sop_instance_uid, SrMeasurement.ordinal).limit(limit)
    ).scalars()
    return [
        query_pb.MeasurementRecord(
            report=instance_pb2.InstanceRef(
                tenant=tenant,
                study_instance_uid=row.study_instance_uid,
                series_instance_uid=row.series_instance_uid,
                sop_instance_uid=row.sop_instance_uid,
                sop_class_uid=row.sop_class_uid,
            ),
            measurement=measurement_message(row),
        )
        for row in rows
    ]


def report_text(session: Session, tenant: str, sop_instance_uid: str) -> str:
    """The plain-text rendering of one indexed SR.

    Raises:
        NotFoundError: no such instance in the tenant.
        InvalidArgumentError: the instance is not an SR document.
    """
    header = session.execute(
        select(Instance.dicom_json).where(
            Instance.tenant == tenant, Instance.sop_instance_uid == sop_instance_uid
        )
    ).scalar_one_or_none()
    if header is None:
        raise NotFoundError("no such instance in this tenant")
    dataset = Dataset.from_json(header)
    if "ContentSequence" not in dataset and "ValueType" not in dataset:
        raise InvalidArgumentError("the instance is not a structured report")
    return render_text(dataset)

"""HL7 workflow events, the worklist, MPPS and SR measurements on both backends (SQLite and
PostgreSQL), through the indexer's own functions."""

from __future__ import annotations

import uuid

import pytest
from indexer_helpers import Catalog, make_instance
from pacs.events.v1 import workflow_events_pb2 as pb
from pacs_common.errors import AlreadyExistsError, FailedPreconditionError, NotFoundError
from pacs_indexer import mpps
from pacs_indexer.attributes import Level
from pacs_indexer.database import Database
from pacs_indexer.query import FindQuery
from pacs_indexer.workflow import WorkflowHandler
from pacs_indexer.worklist import find_worklist
from pydicom.dataset import Dataset


def _origin(tenant: str) -> pb.MessageOrigin:
    return pb.MessageOrigin(tenant=tenant, sender="RIS^H", control_id=uuid.uuid4().hex)


def _order(
    tenant: str, patient: str, accession: str, start: tuple[str, str], ae: str
) -> pb.OrderPlaced:
    return pb.OrderPlaced(
        origin=_origin(tenant),
        patient=pb.Patient(patient_id=patient, issuer_of_patient_id="H", patient_name="DOE^J"),
        step=pb.ScheduledStep(
            order_number=f"PO{accession}",
            step_id=f"S{accession}",
            accession_number=accession,
            modality="CT",
            station_ae_title=ae,
            start_date=start[0],
            start_time=start[1],
        ),
    )


def _find(database: Database, tenant: str, **match: str) -> list[str]:
    with database.session() as session:
        result = find_worklist(session, tenant, match, limit=100, offset=0, fuzzy=False)
    return [d["00080050"]["Value"][0] for d in result.datasets]


def test_worklist_matching(database: Database) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    handler = WorkflowHandler(database)
    handler.apply(_order(tenant, "P1", "A1", ("20261130", "0800"), "CT1"))
    handler.apply(_order(tenant, "P1", "A2", ("20261130", "1400"), "CT2"))
    handler.apply(_order(tenant, "P2", "A3", ("20261201", "0900"), "CT1"))
    assert sorted(_find(database, tenant)) == ["A1", "A2", "A3"]
    assert _find(database, tenant, ScheduledStationAETitle="CT1") == ["A1", "A3"]
    assert _find(database, tenant, ScheduledProcedureStepStartDate="20261130") == ["A1", "A2"]
    # combined date-time range (PS3.4 C.2.2.2.5.1): 30 Nov 12:00 to 1 Dec 10:00
    assert _find(
        database,
        tenant,
        ScheduledProcedureStepStartDate="20261130-20261201",
        ScheduledProcedureStepStartTime="1200-1000",
    ) == ["A2", "A3"]
    assert _find(database, tenant, PatientName="DOE*", PatientID="P2") == ["A3"]
    assert _find(database, f"{tenant}x") == []
    handler.apply(
        pb.OrderCancelled(
            origin=_origin(tenant),
            step=pb.ScheduledStep(order_number="POA1", step_id="SA1"),
            action=pb.ORDER_ACTION_CANCEL,
        )
    )
    assert _find(database, tenant, ScheduledStationAETitle="CT1") == ["A3"]
    assert _find(database, tenant, ScheduledProcedureStepStatus="CANCELLED") == ["A1"]


def test_mpps_moves_the_step(database: Database) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    WorkflowHandler(database).apply(_order(tenant, "P1", "M1", ("20261130", "0800"), "CT1"))
    create = Dataset()
    create.PerformedProcedureStepStatus = "IN PROGRESS"
    item = Dataset()
    item.AccessionNumber = "M1"
    item.ScheduledProcedureStepID = "SM1"
    create.ScheduledStepAttributesSequence = [item]
    uid = "1.2.3.4"
    with database.session() as session:
        assert mpps.create(session, tenant, uid, create.to_json()).steps_updated == 1
    with pytest.raises(AlreadyExistsError), database.session() as session:
        mpps.create(session, tenant, uid, create.to_json())
    assert _find(database, tenant, ScheduledProcedureStepStatus="STARTED") == ["M1"]
    stored = make_instance(PatientID="P1")
    Catalog(database).add(tenant, stored)
    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    series = Dataset()
    series.SeriesInstanceUID = stored.SeriesInstanceUID
    image = Dataset()
    image.ReferencedSOPClassUID = stored.SOPClassUID
    image.ReferencedSOPInstanceUID = stored.SOPInstanceUID
    series.ReferencedImageSequence = [image]
    done.PerformedSeriesSequence = [series]
    with database.session() as session:
        recorded = mpps.update(session, tenant, uid, done.to_json())
    assert recorded.status == "COMPLETED"
    assert recorded.all_instances_stored  # the one reported image is indexed
    second = "1.2.3.5"
    with database.session() as session:
        mpps.create(session, tenant, second, create.to_json())
    missing = Dataset()
    missing.ReferencedSOPClassUID = stored.SOPClassUID
    missing.ReferencedSOPInstanceUID = "1.2.3.999"
    series.ReferencedImageSequence = [image, missing]
    done.PerformedSeriesSequence = [series]
    with database.session() as session:
        assert not mpps.update(session, tenant, second, done.to_json()).all_instances_stored
    assert _find(database, tenant, ScheduledProcedureStepStatus="COMPLETED") == ["M1"]
    with pytest.raises(FailedPreconditionError), database.session() as session:
        mpps.update(session, tenant, uid, done.to_json())
    with pytest.raises(NotFoundError), database.session() as session:
        mpps.update(session, tenant, "9.9", done.to_json())


def test_merge_event_moves_studies_and_is_applied_once(database: Database) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    catalog = Catalog(database)
    catalog.add(tenant, make_instance(PatientID="OLD", IssuerOfPatientID="H", PatientName="A^B"))
    catalog.add(tenant, make_instance(PatientID="NEW", IssuerOfPatientID="H", PatientName="A^B"))
    merge = pb.PatientsMerged(
        origin=_origin(tenant),
        target=pb.Patient(patient_id="NEW", issuer_of_patient_id="H", patient_name="A^BEE"),
        source=pb.Patient(patient_id="OLD", issuer_of_patient_id="H"),
    )
    handler = WorkflowHandler(database)
    assert handler.apply_all([merge, merge]) == 1  # the same message twice in one batch
    assert handler.apply(merge) is False  # redelivered: recognised, nothing changes
    found = catalog.find(
        FindQuery(tenant=tenant, level=Level.STUDY, match={"PatientID": "NEW", "PatientName": ""})
    )
    assert found.total_count == 2
    assert {d["00100010"]["Value"][0]["Alphabetic"] for d in found.datasets} == {"A^BEE"}

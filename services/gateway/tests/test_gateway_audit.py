"""Audit events through the path a DICOM user takes: DCMTK storescu/findscu/getscu and a
refused AE against the gateway, the events on Kafka, stored by the real audit service."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from gateway_helpers import (
    eventually,
    findscu,
    run_dcmtk,
    sample_path,
    stored_and_indexed,
    write_registry,
)
from pacs.events.v1 import audit_events_pb2 as audit_pb
from pacs_testkit.audit import audit_topic, emitter_settings, start_audit
from pydicom import dcmread

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

CT = "CT_small.dcm"
QUERY = audit_pb.AUDIT_EVENT_TYPE_QUERY
BEGIN = audit_pb.AUDIT_EVENT_TYPE_BEGIN_TRANSFERRING
TRANSFERRED = audit_pb.AUDIT_EVENT_TYPE_INSTANCES_TRANSFERRED
ALERT = audit_pb.AUDIT_EVENT_TYPE_SECURITY_ALERT


async def _records(audit: Any, event_type: int, **filters: Any) -> list[audit_pb.AuditEvent]:
    found = audit.trail.query(tenants=None, event_type=event_type, **filters)
    return [record.event for record in found]


async def _eventually_records(audit: Any, event_type: int, **filters: Any) -> list[Any]:
    async def present() -> bool:
        return bool(await _records(audit, event_type, **filters))

    assert await eventually(present, within_s=60), f"no audit record of type {event_type}"
    return await _records(audit, event_type, **filters)


async def test_dicom_users_are_audited(
    start_connected_gateway: Any, tmp_path: Path, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    # INFO: the services' default level. (At DEBUG, aiokafka's producer logs every record's
    # value, InstanceStored headers included: a third-party debug log, not ours.)
    caplog.set_level(logging.INFO)
    topic = audit_topic()
    audit = await start_audit(tmp_path / "audit", topic)
    try:
        registry = write_registry(
            tmp_path / "registry.yaml",
            {tenant: {"callers": [{"ae_title": "MODALITY", "networks": ["127.0.0.1/32"]}]}},
        )
        gateway = await start_connected_gateway(
            site_registry=registry, audit=emitter_settings(topic)
        )
        header = dcmread(sample_path(CT), stop_before_pixels=True)
        patient, study = str(header.PatientID), str(header.StudyInstanceUID)
        await stored_and_indexed(gateway.dicom_port, [sample_path(CT)])

        # C-STORE: DICOM Instances Transferred, action Create, naming patient and study.
        stored = await _eventually_records(audit, TRANSFERRED, patient_id=patient)
        assert any(e.action == "C" and list(e.study_instance_uids) == [study] for e in stored)
        assert all(e.tenant == tenant for e in stored)

        # DCMTK findscu: Query, naming the calling AE and carrying the identifier.
        await findscu(
            gateway.dicom_port, tmp_path / "find", "-S", "-aet", "MODALITY",
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={patient}",
            "-k", "StudyInstanceUID",
        )  # fmt: skip
        queries: list[audit_pb.AuditEvent] = []

        async def query_recorded() -> bool:
            nonlocal queries
            found = await _records(audit, QUERY, actor="MODALITY")
            queries = [e for e in found if patient.encode() in e.query]
            return bool(queries)

        assert await eventually(query_recorded, within_s=60)
        assert queries[0].query_model == "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root FIND
        assert queries[0].patient_id == patient  # the query named exactly this patient

        # DCMTK getscu: Begin Transferring, then Instances Transferred (Read) for the patient.
        code, out = await run_dcmtk(
            "getscu", "-S", "-aet", "MODALITY", "-aec", "CLOUDPACS", "-od", tmp_path,
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
            "127.0.0.1", str(gateway.dicom_port),
        )  # fmt: skip
        assert code == 0, out
        begun = await _eventually_records(audit, BEGIN, study_instance_uid=study)
        assert begun[0].actors[1].ae_title == "MODALITY"
        read = [e for e in await _eventually_records(audit, TRANSFERRED, patient_id=patient)]

        async def read_recorded() -> bool:
            nonlocal read
            read = [
                e for e in await _records(audit, TRANSFERRED, patient_id=patient) if e.action == "R"
            ]
            return bool(read)

        assert await eventually(read_recorded, within_s=60)
        assert read[0].sop_classes[0].number_of_instances == 1

        # A calling AE the registry does not know: refused, and a Security Alert.
        code, out = await run_dcmtk(
            "echoscu", "-aet", "INTRUDER", "-aec", "CLOUDPACS", "127.0.0.1",
            str(gateway.dicom_port),
        )  # fmt: skip
        assert code != 0
        alerts = await _eventually_records(audit, ALERT, actor="INTRUDER")
        assert alerts[0].event_type_code == "110126"  # Node Authentication
        assert alerts[0].outcome != audit_pb.AUDIT_OUTCOME_SUCCESS_UNSPECIFIED

        # The audit records carry the patient by design; the services' logs never do.
        phi = {patient, str(header.PatientName)}
        for record in caplog.records:
            text = " ".join(str(value) for value in vars(record).values())
            assert not any(value in text for value in phi), (record.name, record.getMessage())
    finally:
        await audit.stop()

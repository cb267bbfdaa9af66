"""Export: every record as a schema-valid DICOM audit message (PS3.15 A.5.1), sent as RFC 5424
syslog over TLS (RFC 5425) to Debian's rsyslog, queued durably while the collector is down."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from audit_helpers import Collector, sample_event, schema_errors
from pacs.events.v1 import audit_events_pb2 as audit_pb
from pacs_audit.exporter import Exporter
from pacs_audit.syslog import CollectorSettings, SyslogSender
from pacs_audit.trail import Trail
from pacs_audit.xml_message import render
from pacs_common import audit_events
from pacs_testkit.audit import audit_topic, start_audit


class _Caller:
    tenant = "t1"
    calling_ae_title = "FINDSCU"
    address = "10.1.2.3"
    user = "alice"


class _Ref:
    def __init__(self, study: str) -> None:
        self.study_instance_uid = study
        self.sop_class_uid = "1.2.840.10008.5.1.4.1.1.4"


def every_kind_of_event() -> list[audit_pb.AuditEvent]:
    """One event from each builder the services use."""
    caller = _Caller()
    events = [
        audit_events.dicom_instances_stored(
            caller,
            "CLOUDPACS",
            study_instance_uid="1.2.3",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            part10=b"",
            ok=True,
        ),
        audit_events.dicom_query(caller, "CLOUDPACS", "1.2.840.10008.5.1.4.1.2.2.1", b"\x08", True),
        audit_events.dicom_retrieve(
            caller, "CLOUDPACS", [_Ref("1.2.3"), _Ref("1.2.4")], begin=True, destination="STORESCP"
        ),
        audit_events.dicom_retrieve(
            caller, "CLOUDPACS", [_Ref("1.2.3")], begin=False, ok=False, patient_id="P1"
        ),
        audit_events.association_refused("CLOUDPACS", None, "calling AE title not recognised"),
        audit_events.rpc_refused(
            "pacs.query.v1.QueryService",
            "pacs.query.v1.QueryService/FindStudies",
            subject="",
            address="127.0.0.1",
            reason="token expired",
        ),
        audit_events.rpc_query(
            "indexer", "STUDY", subject="app", tenant="t1", request=b"", ok=True
        ),
        audit_events.audit_log_used("audit", "auditor", "t1", b"\x12\x02P1"),
        audit_events.application_activity("indexer", started=True),
        audit_events.application_activity("indexer", started=False),
    ]
    found = [event for event in events if event is not None]
    for number, event in enumerate(found):
        event.id = f"id-{number}"
        event.event_time = "2026-11-30T12:00:00.000Z"
        event.source = "gateway"
    return found


def test_every_event_type_renders_schema_valid_xml(tmp_path: Path) -> None:
    for event in every_kind_of_event():
        assert schema_errors(render(event), tmp_path) == "", event.event_type


def test_the_schema_rejects_an_invalid_message(tmp_path: Path) -> None:
    # Without this, a schema that accepts anything would make the test above pass.
    broken = render(every_kind_of_event()[0]).replace(b'EventOutcomeIndicator="0"', b"")
    assert "fails to validate" in schema_errors(broken, tmp_path)


def _exporter(trail: Trail, collector: Collector) -> Exporter:
    settings = CollectorSettings("127.0.0.1", collector.port, collector.ca_file)
    return Exporter(trail, SyslogSender(settings, timeout_s=10))


@pytest.fixture
def collector(tmp_path: Path) -> Collector:
    """A started rsyslog collector, stopped afterwards."""
    running = Collector(tmp_path / "collector")
    running.start()
    yield running  # type: ignore[misc]
    running.stop()


async def test_records_reach_rsyslog_as_valid_audit_messages(
    trail: Trail, collector: Collector, tmp_path: Path
) -> None:
    events = every_kind_of_event()
    trail.append(events)
    exporter = _exporter(trail, collector)
    assert await exporter.export_once() == len(events)
    await exporter.stop()
    received = collector.wait_for(len(events))
    assert exporter.backlog() == 0
    for pri, app, msgid, xml in received:
        assert msgid == "IHE+RFC-3881"  # PS3.15 A.6
        assert int(pri) // 8 == 10  # facility 10 (security/authorization)
        assert app == "gateway"
        assert schema_errors(xml, tmp_path) == ""
    assert [xml for *_, xml in received] == [render(event) for event in events]


async def test_records_wait_for_a_collector_that_is_down(trail: Trail, tmp_path: Path) -> None:
    collector = Collector(tmp_path / "collector")  # not started: nothing listens
    trail.append([sample_event(patient=f"P{i}") for i in range(3)])
    exporter = _exporter(trail, collector)
    with pytest.raises(OSError):
        await exporter.export_once()
    assert exporter.backlog() == 3
    collector.start()
    try:
        assert await exporter.export_once() == 3
        collector.wait_for(3)
        # The collector goes away and comes back: what was stored meanwhile still arrives.
        collector.stop()
        trail.append([sample_event(patient=f"Q{i}") for i in range(2)])
        with pytest.raises(OSError):
            for _ in range(5):  # the first write may still find the old connection open
                await exporter.export_once()
        assert exporter.backlog() >= 1
        collector.start()
        while await exporter.export_once():
            pass
        assert exporter.backlog() == 0
        patients = {xml.split(b'ParticipantObjectID="')[1][:2] for *_, xml in collector.wait_for(5)}
        assert patients == {b"P0", b"P1", b"P2", b"Q0", b"Q1"}
    finally:
        await exporter.stop()
        collector.stop()


@pytest.mark.integration
async def test_the_running_service_exports_what_it_consumes(
    infra_env: dict[str, str], collector: Collector, tmp_path: Path
) -> None:
    # The service's own Application Start record travels emitter -> Kafka -> trail -> syslog.
    app = await start_audit(
        tmp_path / "service",
        audit_topic(),
        syslog_host="127.0.0.1",
        syslog_port=collector.port,
        syslog_ca_file=collector.ca_file,
    )
    try:
        received = await asyncio.to_thread(collector.wait_for, 1)
    finally:
        await app.stop()
    assert b'csd-code="110100"' in received[0][3]  # Application Activity
    assert b'csd-code="110120"' in received[0][3]  # Application Start
    assert schema_errors(received[0][3], tmp_path) == ""

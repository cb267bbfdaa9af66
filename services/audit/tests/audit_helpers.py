"""Helpers of the audit service tests."""

from __future__ import annotations

import uuid

from pacs.events.v1 import audit_events_pb2 as audit_pb
from pacs_common import audit_events


def sample_event(patient: str = "PAT-1", tenant: str = "t1") -> audit_pb.AuditEvent:
    """A Query-by-C-FIND-like event with an id, time and participants."""
    event = audit_events.dicom_instances_stored(
        _Caller(tenant),
        "CLOUDPACS",
        study_instance_uid="1.2.3.4",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        part10=b"",
        ok=True,
    )
    assert event is not None
    event.id = str(uuid.uuid4())
    event.event_time = "2026-11-30T12:00:00.000Z"
    event.patient_id = patient
    event.source = "gateway"
    return event


class _Caller:
    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.calling_ae_title = "MODALITY"
        self.address = "127.0.0.1"
        self.user: str | None = None

"""What ``pacs dlq show`` prints of an event without ``--show-phi``: technical fields only;
names, UIDs and DICOM bytes masked, including fields it does not know (allow-list)."""

from __future__ import annotations

import pytest
from pacs.events.v1 import instance_events_pb2 as events_pb
from pacs.events.v1 import workflow_events_pb2 as workflow_pb
from pacs.type.v1 import instance_pb2
from pacs_cli.dead_letters import DeadLetterId, group_of_topic
from pacs_cli.event_json import MASK, decode, to_json
from pacs_common.errors import InvalidArgumentError
from pacs_common.events import event_type


def _stored() -> events_pb.InstanceStored:
    ref = instance_pb2.InstanceRef(
        tenant="t1", study_instance_uid="1.2.3.4", sop_class_uid="1.2.840.10008.5.1.4.1.1.2"
    )
    return events_pb.InstanceStored(
        object=instance_pb2.ObjectInfo(instance=ref, size=7, stored_time="2026-11-30T10:00:00Z"),
        header_part10=b"SMITH^JOHN",
    )


def test_instance_event_masked_then_shown() -> None:
    message = decode(event_type(events_pb.InstanceStored()), _stored().SerializeToString())
    assert message is not None
    masked = to_json(message)
    ref = masked["object"]["instance"]
    assert (ref["tenant"], ref["sop_class_uid"]) == ("t1", "1.2.840.10008.5.1.4.1.1.2")
    assert ref["study_instance_uid"] == MASK
    assert masked["object"]["size"] == 7 and masked["object"]["stored_time"]
    assert masked["header_part10"] == f"{MASK} (10 bytes)"
    shown = to_json(message, show_phi=True)
    assert shown["object"]["instance"]["study_instance_uid"] == "1.2.3.4"
    assert shown["header_part10"] == "U01JVEheSk9ITg=="


def test_every_patient_field_of_workflow_events_is_masked() -> None:
    patient_fields = {"patient_id", "patient_name", "patient_birth_date", "accession_number"}
    planted = 0
    for name in workflow_pb.DESCRIPTOR.message_types_by_name:
        cls = getattr(workflow_pb, name)
        message = cls()
        before = planted
        for field in message.DESCRIPTOR.fields:
            if field.message_type is not None and field.message_type.name == "Patient":
                patient = getattr(message, field.name)
                for sub in patient.DESCRIPTOR.fields:
                    if sub.name in patient_fields:
                        setattr(patient, sub.name, "SECRET")
                        planted += 1
        assert "SECRET" not in repr(to_json(message)), name
        if planted > before:
            assert "SECRET" in repr(to_json(message, show_phi=True)), name
    assert planted >= 4


def test_unknown_or_undecodable_type_is_not_decoded() -> None:
    assert decode("pacs.events.v1.NoSuchEvent", b"") is None
    assert decode(event_type(events_pb.InstanceStored()), b"\xff\xff\xff") is None
    assert decode(None, b"") is None


def test_ids_and_topic_names() -> None:
    assert str(DeadLetterId.parse("pacs-indexer:2:17")) == "pacs-indexer:2:17"
    assert DeadLetterId.parse("a.b:0:0").topic == "pacs.deadletter.a.b.v1"
    for bad in ("", "g", "g:1", "g:x:1", ":1:2", "g:1:-2"):
        with pytest.raises(InvalidArgumentError):
            DeadLetterId.parse(bad)
    assert group_of_topic("pacs.deadletter.pacs-indexer.v1") == "pacs-indexer"
    assert group_of_topic("pacs.deadletter-handled.v1") is None
    assert group_of_topic("pacs.instances.v1") is None

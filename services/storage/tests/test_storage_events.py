"""Every successful Put is announced on pacs.instances.v1 before Put returns."""

from __future__ import annotations

import hashlib

from pacs.events.v1 import instance_events_pb2
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from storage_testkit import InstanceEvents, for_tenant, sample_part10


async def test_put_announces_instance_stored_as_a_cloudevent(
    client: StorageClient, events: InstanceEvents, tenant: str
) -> None:
    data = sample_part10()
    ref = instance_ref_of(data, tenant)

    response = await client.put(ref, data)
    event = await events.next(for_tenant(tenant))

    assert event.record.topic == "pacs.instances.v1"
    assert event.record.key == ref.study_instance_uid.encode()
    assert event.header("ce_type") == "pacs.events.v1.InstanceStored"
    assert event.header("ce_source") == "storage"
    assert event.header("ce_id")
    assert event.header("ce_time")
    assert event.header("content-type") == "application/protobuf"
    assert isinstance(event.message, instance_events_pb2.InstanceStored)
    assert event.message.object == response.object
    assert event.message.object.sha256 == hashlib.sha256(data).hexdigest()
    assert event.message.object.instance.sop_class_uid == ref.sop_class_uid
    assert not event.message.new_version


async def test_repeating_a_put_writes_nothing_new_but_announces_again(
    client: StorageClient, events: InstanceEvents, tenant: str
) -> None:
    # A Put whose event was lost (Kafka failed after S3 acknowledged) is retried by the
    # caller with the same bytes: the retry must announce the object again.
    data = sample_part10()
    ref = instance_ref_of(data, tenant)

    first = await client.put(ref, data)
    second = await client.put(ref, data)
    announced = await events.drain(for_tenant(tenant), within=2.0)

    assert not first.already_existed
    assert second.already_existed
    assert second.object.version_id == first.object.version_id
    assert second.object.stored_time == first.object.stored_time
    assert len(announced) == 2
    assert all(isinstance(e.message, instance_events_pb2.InstanceStored) for e in announced)
    assert [e.message.object.version_id for e in announced] == [first.object.version_id] * 2

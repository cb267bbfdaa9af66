"""Every successful Put is announced on pacs.instances.v1 before Put returns, with the
instance's header when it is at most the cap."""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from pacs.events.v1 import instance_events_pb2
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls
from pacs_storage.app import StorageApp
from pacs_storage.settings import S3_MIN_PART_SIZE, StorageSettings
from pydicom import dcmread
from storage_testkit import (
    InstanceEvents,
    for_tenant,
    marker_part10,
    sample_part10,
    synthetic_part10,
)


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
    marker = marker_part10(data)  # stored last: its event ends the count
    await client.put(instance_ref_of(marker, tenant), marker)
    announced = await events.until_marker(
        for_tenant(tenant), instance_ref_of(marker, tenant).sop_instance_uid
    )

    assert not first.already_existed
    assert second.already_existed
    assert second.object.version_id == first.object.version_id
    assert second.object.stored_time == first.object.stored_time
    assert len(announced) == 2
    assert all(isinstance(e.message, instance_events_pb2.InstanceStored) for e in announced)
    assert [e.message.object.version_id for e in announced] == [first.object.version_id] * 2


AppFactory = Callable[[StorageSettings], Awaitable[StorageApp]]
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010), explicit VR little endian


@contextlib.asynccontextmanager
async def storage_client(
    app: StorageApp, chunk_size: int = 1024 * 1024
) -> AsyncIterator[StorageClient]:
    channel = open_channel(f"127.0.0.1:{app.grpc_port}", client_tls())
    try:
        yield StorageClient(channel, chunk_size=chunk_size, timeout=60)
    finally:
        await channel.close()


async def test_the_event_carries_the_header_up_to_pixel_data(
    client: StorageClient, events: InstanceEvents, tenant: str
) -> None:
    # Consumers index from the event instead of reading the header back from storage.
    data = sample_part10()
    ref = instance_ref_of(data, tenant)

    await client.put(ref, data)
    event = await events.next(for_tenant(tenant))

    assert isinstance(event.message, instance_events_pb2.InstanceStored)
    header = event.message.header_part10
    assert 0 < len(header) < len(data)
    assert data.startswith(header)
    assert data[len(header) : len(header) + 4] == PIXEL_DATA_TAG
    parsed = dcmread(io.BytesIO(header))
    assert parsed == dcmread(io.BytesIO(data), stop_before_pixels=True)
    assert parsed.file_meta.TransferSyntaxUID == ref.transfer_syntax_uid


async def test_an_instance_without_pixel_data_travels_whole(
    client: StorageClient, events: InstanceEvents, tenant: str
) -> None:
    data = sample_part10("rtplan.dcm")
    ref = instance_ref_of(data, tenant)

    await client.put(ref, data)
    event = await events.next(for_tenant(tenant))

    assert isinstance(event.message, instance_events_pb2.InstanceStored)
    assert event.message.header_part10 == data


async def test_a_multipart_object_still_carries_its_header(
    start_app: AppFactory,
    storage_settings: StorageSettings,
    events: InstanceEvents,
    tenant: str,
) -> None:
    # Only the first bytes of a large Put are kept for the header, never the whole object.
    settings = storage_settings.model_copy(
        update={"multipart_threshold": S3_MIN_PART_SIZE, "part_size": S3_MIN_PART_SIZE}
    )
    app = await start_app(settings)
    data = synthetic_part10(S3_MIN_PART_SIZE + 1024 * 1024)
    ref = instance_ref_of(data, tenant)

    async with storage_client(app, chunk_size=256 * 1024) as client:
        await client.put(ref, data)
    event = await events.next(for_tenant(tenant))

    assert isinstance(event.message, instance_events_pb2.InstanceStored)
    header = event.message.header_part10
    assert 0 < len(header) < 4096
    assert data[len(header) : len(header) + 4] == PIXEL_DATA_TAG
    assert dcmread(io.BytesIO(header)).SOPInstanceUID == ref.sop_instance_uid


@pytest.mark.parametrize("cap", [1024, 0])  # CT_small's header is 6 288 bytes; 0 = never
async def test_a_header_over_the_cap_is_left_to_a_read_from_storage(
    start_app: AppFactory,
    storage_settings: StorageSettings,
    events: InstanceEvents,
    tenant: str,
    cap: int,
) -> None:
    app = await start_app(storage_settings.model_copy(update={"event_header_cap_bytes": cap}))
    data = sample_part10()
    ref = instance_ref_of(data, tenant)

    async with storage_client(app) as client:
        response = await client.put(ref, data)
    event = await events.next(for_tenant(tenant))

    assert isinstance(event.message, instance_events_pb2.InstanceStored)
    assert event.message.header_part10 == b""
    # Exactly the event of a storage from before the header field: consumers read the object.
    old_style = instance_events_pb2.InstanceStored(object=response.object)
    assert event.record.value == old_style.SerializeToString()


async def test_bytes_that_are_not_dicom_are_stored_and_announced_without_header(
    client: StorageClient, events: InstanceEvents, tenant: str
) -> None:
    ref = instance_ref_of(sample_part10(), tenant)
    data = b"not DICOM at all" * 100

    await client.put(ref, data)
    event = await events.next(for_tenant(tenant))

    assert isinstance(event.message, instance_events_pb2.InstanceStored)
    assert event.message.object.size == len(data)
    assert event.message.header_part10 == b""

"""Routing to DICOM facilities end to end: instances stored through the real storage service
announce InstanceStored on the real Kafka, the router's rules enqueue them on each
destination's topic, and its senders deliver them with C-STORE to DCMTK ``storescp``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer
from pacs.events.v1 import audit_events_pb2 as audit_pb
from pacs.events.v1 import route_events_pb2
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.events import dead_letter_topic, header
from pacs_common.kafka_client import kafka_client_options
from pacs_common.settings import KafkaSettings
from pacs_testkit.audit import audit_topic, emitter_settings
from router_peers import (
    RouterFactory,
    StoreScp,
    data_set_bytes,
    dataset_of,
    dimse,
    eventually,
    sample,
)

CT_ONLY = {"modality": ["CT"]}


async def _store(client: StorageClient, tenant: str, part10: bytes) -> str:
    ref = instance_ref_of(part10, tenant)
    await client.put(ref, part10)
    return ref.sop_instance_uid


async def test_a_matching_instance_reaches_storescp_unchanged(
    start_router: RouterFactory,
    storage_client: StorageClient,
    storescp: Callable[..., StoreScp],
    tenant: str,
) -> None:
    peer = storescp().start()
    topic = audit_topic()
    await start_router(
        {
            "destinations": {"site-b": dimse(peer)},
            "tenants": {tenant: [{"name": "ct", "destinations": ["site-b"], "match": CT_ONLY}]},
        },
        audit=emitter_settings(topic),
    )
    study = dataset_of(sample()).StudyInstanceUID
    mr = sample("MR_small.dcm", study_uid=study)
    ct = sample(study_uid=study)
    await _store(storage_client, tenant, mr)  # does not match: never sent
    uid = await _store(storage_client, tenant, ct)

    async def arrived() -> list[object] | None:
        return peer.received() or None  # type: ignore[return-value]

    await eventually(arrived, what="the CT at storescp")
    received = peer.received()
    assert len(received) == 1  # the MR, stored first in the same study, was passed over
    got = received[0].read_bytes()
    assert dataset_of(got).SOPInstanceUID == uid
    assert data_set_bytes(got) == data_set_bytes(ct)  # the data set byte for byte

    # The disclosure to another facility is audited (PS3.15 A.5.3.4, the router as source).
    event = await _transfer_event(topic)
    assert event.tenant == tenant
    assert event.study_instance_uids == [study]
    assert event.patient_id == dataset_of(ct).PatientID
    assert [a.ae_title for a in event.actors if not a.requestor] == ["CLOUDPACS", "REMOTE"]


async def _transfer_event(topic: str) -> audit_pb.AuditEvent:
    """The first DICOM Instances Transferred event of an audit topic (waiting for it)."""
    reader = AIOKafkaConsumer(
        topic,
        **kafka_client_options(KafkaSettings()),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        async with asyncio.timeout(60):
            async for record in reader:
                event = audit_pb.AuditEvent.FromString(record.value or b"")
                if event.event_type == audit_pb.AUDIT_EVENT_TYPE_INSTANCES_TRANSFERRED:
                    return event
    finally:
        await reader.stop()
    raise AssertionError("no transfer event")


async def test_a_destination_down_for_a_while_gets_everything_in_order(
    start_router: RouterFactory,
    storage_client: StorageClient,
    storescp: Callable[..., StoreScp],
    channel_to: Callable[..., object],
    tenant: str,
) -> None:
    peer = storescp()  # not listening yet: the facility is down
    app = await start_router(
        {
            "destinations": {"site-b": dimse(peer)},
            "tenants": {tenant: [{"name": "all", "destinations": ["site-b"]}]},
        }
    )
    study = dataset_of(sample()).StudyInstanceUID
    sent = [await _store(storage_client, tenant, sample(study_uid=study)) for _ in range(4)]

    sender = app.senders["site-b"]

    async def retrying() -> bool:
        return sender.state.retries >= 2 and bool(sender.state.last_error)

    await eventually(retrying, what="the sender retrying an unreachable destination")
    assert sender.state.sent == 0
    assert "cannot connect" in sender.state.last_error or "association" in sender.state.last_error

    async def all_queued() -> bool:
        return await app.servicer.queued("site-b") == len(sent)

    await eventually(all_queued, what="four instances queued")

    peer.start()  # the facility is back

    async def all_arrived() -> bool:
        return len(peer.received()) == len(sent)

    await eventually(all_arrived, within=180, what="every queued instance at storescp")
    arrived = [dataset_of(path).SOPInstanceUID for path in peer.received()]
    assert arrived == sent  # none lost, none twice, in the order they were stored

    async def drained() -> bool:
        return await app.servicer.queued("site-b") == 0

    await eventually(drained, what="the queue drained")
    assert sender.state.sent == len(sent)


async def test_a_refused_instance_is_dead_lettered_and_the_queue_moves_on(
    start_router: RouterFactory,
    storage_client: StorageClient,
    storescp: Callable[..., StoreScp],
    tenant: str,
) -> None:
    peer = storescp().start()
    app = await start_router(
        {
            "destinations": {"site-b": dimse(peer)},
            "tenants": {tenant: [{"name": "all", "destinations": ["site-b"]}]},
        }
    )
    study = dataset_of(sample()).StudyInstanceUID
    # A private SOP class storescp does not know: it rejects the presentation context, so
    # the destination can never take this instance (SOP class not supported).
    private = sample(study_uid=study, sop_class_uid="1.2.826.0.1.3680043.8.498.99999")
    refused = await _store(storage_client, tenant, private)
    accepted = await _store(storage_client, tenant, sample(study_uid=study))

    async def arrived() -> bool:
        return len(peer.received()) == 1

    await eventually(arrived, what="the instance after the refused one")
    assert dataset_of(peer.received()[0]).SOPInstanceUID == accepted
    sender = app.senders["site-b"]
    assert sender.state.failed == 1
    assert "SOP class not supported" in sender.state.last_error

    group = app.settings.sender_group_prefix + "site-b"
    kafka = KafkaSettings()
    reader = AIOKafkaConsumer(
        dead_letter_topic(group),
        **kafka_client_options(kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        record = await asyncio.wait_for(reader.getone(), timeout=60)
    finally:
        await reader.stop()
    assert "SOP class not supported" in (header(record, "dlq_error") or "")
    routed = route_events_pb2.InstanceRouted.FromString(record.value or b"")
    assert routed.object.instance.sop_instance_uid == refused

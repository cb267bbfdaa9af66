"""Routing rules driven by real InstanceStored events: a CT stored in tenant A through storage
is copied, de-identified, into the research tenant; an MR is not; an image with burned-in
annotation goes to the group's dead-letter topic with the reason."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from deid_fixtures import deid_settings, instance, ref_of, storage_client
from deid_kafka import wait_for_event
from pacs.events.v1 import deid_events_pb2 as events_pb
from pacs.events.v1 import instance_events_pb2
from pacs_common.events import dead_letter_topic
from pacs_common.kafka_client import kafka_client_options
from pacs_common.settings import KafkaSettings
from pacs_deid.operations import TOPIC_DEID
from pacs_deid.profile import Profile
from pacs_deid.residuals import violations
from pacs_storage.app import StorageApp
from pacs_testkit.kafka import group_at_end_of_topic
from pydicom import dcmread
from pydicom.uid import generate_uid


async def test_rule_copies_matching_instances(
    start_deid, storage_app: StorageApp, tenant: str, target_tenant: str, tmp_path: Path
) -> None:
    group = f"test-deid-routing-{uuid.uuid4().hex[:8]}"
    await group_at_end_of_topic(group, KafkaSettings())
    settings = deid_settings(
        tenant,
        target_tenant,
        tmp_path,
        storage_port=storage_app.grpc_port,
        consumer_group=group,
        routing_rules=[
            {
                "name": "ct-to-research",
                "project": "research",
                "source_tenant": tenant,
                "modalities": ["CT"],
                "series_description": "chest",
            }
        ],
    )
    await start_deid(settings)
    storage = storage_client(storage_app)
    study = generate_uid()
    ct = instance(study, generate_uid(), "MRN-R1", SeriesDescription="CHEST routine")
    mr = instance(study, generate_uid(), "MRN-R1", Modality="MR", SeriesDescription="chest")
    other = instance(study, generate_uid(), "MRN-R1", SeriesDescription="head")
    burned = instance(
        study, generate_uid(), "MRN-R1", SeriesDescription="chest", BurnedInAnnotation="YES"
    )
    for data in (ct, mr, other, burned):
        await storage.put(ref_of(data, tenant), data)

    deadline = time.monotonic() + 120
    copies = []
    while time.monotonic() < deadline and not copies:
        copies = [info async for info in storage.list_all(target_tenant)]
        await asyncio.sleep(0.3)
    assert len(copies) == 1
    ds = dcmread(io.BytesIO(await storage.get(copies[0].instance)))
    assert not violations(ds, Profile(frozenset()))
    assert ds.Modality == "CT" and ds.PatientID != "MRN-R1"
    event = await wait_for_event(
        TOPIC_DEID,
        events_pb.InstanceDeidentified,
        lambda e: e.target.tenant == target_tenant,  # type: ignore[attr-defined]
    )
    assert event.trigger == "rule:ct-to-research" and event.source_tenant == tenant  # type: ignore[attr-defined]

    dead = await _dead_letter(group, ref_of(burned, tenant).sop_instance_uid)
    assert "BurnedInAnnotation" in dead
    # Nothing else arrived meanwhile (the MR and the head series did not match).
    assert len([i async for i in storage.list_all(target_tenant)]) == 1


async def _dead_letter(group: str, sop_instance_uid: str, within_s: float = 90) -> str:
    """The error header of the dead-lettered record of one instance."""
    consumer = AIOKafkaConsumer(
        dead_letter_topic(group),
        **kafka_client_options(KafkaSettings()),
        group_id=f"{group}-reader",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    event = instance_events_pb2.InstanceStored.FromString(record.value or b"")
                    if event.object.instance.sop_instance_uid == sop_instance_uid:
                        headers = {k: bytes(v).decode() for k, v in record.headers or ()}
                        return " ".join(headers.values())
    finally:
        await consumer.stop()
    raise AssertionError("no dead letter")

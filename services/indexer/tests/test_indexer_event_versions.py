"""Consumers accept events of the previous schema version, and ignore what a newer one adds
(docs/operations.md, "Upgrades").

The rule: within a topic version (``pacs.instances.v1``) a message only gains optional fields;
a consumer reads what it knows and treats a missing field as "not sent" (protobuf proto3: an
unset field is its default, unknown fields are skipped). ``make lint`` runs ``buf breaking``
against main, which refuses a change that would break that on the wire (a renumbered, retyped
or reused field); an incompatible change gets a new topic (``v2``).

The bytes under ``fixtures/upgrade`` were serialized by the generated code of the commit before
``InstanceStored`` gained ``header_part10`` (``instance_stored_previous.bin``), and by hand as a
later release that adds fields would send them (``instance_stored_newer.bin``); see
``make_fixtures.py``. Each is published on the real ``pacs.instances.v1`` topic with the
CloudEvents headers storage sends, to a real indexer whose storage holds the object; the
instance must become findable, its header read from storage (the old event carries none).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from pacs.events.v1 import instance_events_pb2 as events_pb
from pacs.query.v1 import query_service_pb2 as pb
from pacs.query.v1 import query_service_pb2_grpc as pb_grpc
from pacs_common.auth import Role
from pacs_common.events import TOPIC_INSTANCES, cloudevent_headers
from pacs_common.kafka_client import kafka_client_options
from pacs_common.settings import KafkaSettings
from pacs_indexer.database import Database
from pacs_storage.app import StorageApp
from pacs_testkit.channels import plain_aio_channel
from pacs_testkit.hydra import Hydra
from pacs_testkit.storage import start_storage
from pydicom import dcmread
from pydicom.data import get_testdata_file
from upgrade_support import (
    FIXTURES,
    previous_release,
    restore_previous_objects,
    start_deployed_indexer,
)

PREVIOUS = (FIXTURES / "instance_stored_previous.bin").read_bytes()
NEWER = (FIXTURES / "instance_stored_newer.bin").read_bytes()


def test_previous_bytes_decode_with_todays_message() -> None:
    event = events_pb.InstanceStored.FromString(PREVIOUS)
    ct = previous_release()["objects"][0]
    assert event.object.key == ct["key"]
    assert event.object.sha256 == ct["sha256"]
    assert event.object.size == ct["size"]
    assert event.object.instance.sop_class_uid == ct["sop_class_uid"]
    assert event.header_part10 == b""  # not sent: the consumer reads the header from storage


def test_newer_bytes_decode_and_keep_only_what_today_knows() -> None:
    newer = events_pb.InstanceStored.FromString(NEWER)
    previous = events_pb.InstanceStored.FromString(PREVIOUS)
    assert newer.object.instance == previous.object.instance
    assert newer.object.key == previous.object.key
    # The unknown fields were skipped, not misread into known ones.
    known = events_pb.InstanceStored()
    known.CopyFrom(newer)
    known.DiscardUnknownFields()
    assert known == previous
    assert newer != previous


@pytest.fixture
async def storage(bucket_name: str, infra_env: dict[str, str]) -> AsyncIterator[StorageApp]:
    """Storage over a bucket holding the objects the fixture events announce."""
    restore_previous_objects(bucket_name, previous_release())
    app = await start_storage(bucket_name)
    yield app
    await app.stop()


@pytest.mark.integration
@pytest.mark.parametrize("payload", [PREVIOUS, NEWER], ids=["previous", "newer"])
async def test_indexer_consumes_the_event_from_kafka(
    payload: bytes, storage: StorageApp, tmp_path: Path, hydra: Hydra
) -> None:
    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    Database(url).migrate()
    indexer = await start_deployed_indexer(storage.grpc_port, url)
    event = events_pb.InstanceStored.FromString(payload)
    tenant = event.object.instance.tenant
    producer = AIOKafkaProducer(**kafka_client_options(KafkaSettings()), acks="all")
    channel = plain_aio_channel(f"127.0.0.1:{indexer.grpc_port}")
    try:
        await producer.start()
        # Sent as storage sends it: the raw bytes, CloudEvents headers, keyed by study.
        await producer.send_and_wait(
            TOPIC_INSTANCES,
            payload,
            key=event.object.instance.study_instance_uid.encode(),
            headers=cloudevent_headers(events_pb.InstanceStored(), "storage"),
        )
        query = pb_grpc.QueryServiceStub(channel)
        metadata = hydra.metadata(tenant, [Role.QUERY])
        path = get_testdata_file("CT_small.dcm")
        assert path is not None
        dataset = dcmread(path, stop_before_pixels=True)
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            found = await query.FindInstances(
                pb.FindInstancesRequest(
                    query=pb.Query(
                        tenant=tenant,
                        match={"SOPInstanceUID": dataset.SOPInstanceUID},
                        return_keys=["PatientID", "Rows"],
                    )
                ),
                metadata=metadata,
            )
            if found.total_count:
                break
            assert asyncio.get_running_loop().time() < deadline, "event not indexed in 60 s"
            await asyncio.sleep(0.2)
        instance = json.loads(found.datasets[0])
        assert instance["00100020"]["Value"] == [dataset.PatientID]
        header = await query.GetInstanceMetadata(
            pb.GetInstanceMetadataRequest(tenant=tenant, sop_instance_uid=dataset.SOPInstanceUID),
            metadata=metadata,
        )
        # Read back from storage (the event carried no header): the whole header is there.
        assert json.loads(header.dataset)["00280010"]["Value"] == [dataset.Rows]
    finally:
        await channel.close()
        await producer.stop()
        await indexer.stop()

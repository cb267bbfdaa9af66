"""The event path end to end: storage stores a real DICOM file and announces it on Kafka, the
indexer consumes the event, takes the header from it (or, over storage's cap and for events
without it, reads the header back through storage), and the study becomes findable through
QueryService; deleting it from storage removes it from the index."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from indexer_helpers import values
from pacs.events.v1 import instance_events_pb2 as events_pb
from pacs.query.v1 import query_service_pb2 as pb
from pacs.query.v1 import query_service_pb2_grpc as pb_grpc
from pacs_common.auth import Role
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.events import TOPIC_INDEXED, TOPIC_INSTANCES, header
from pacs_common.grpc_client import open_channel
from pacs_common.kafka_client import kafka_client_options
from pacs_common.local import client_tls
from pacs_common.oauth_client import bearer_interceptors
from pacs_common.settings import KafkaSettings
from pacs_storage.app import StorageApp
from pacs_testkit.channels import plain_aio_channel
from pacs_testkit.hydra import Hydra
from pacs_testkit.indexer import start_indexer
from pacs_testkit.storage import start_storage
from pydicom import dcmread
from pydicom.data import get_testdata_file

pytestmark = pytest.mark.integration


async def _ensure_topics(kafka: KafkaSettings) -> None:
    admin = AIOKafkaAdminClient(**kafka_client_options(kafka))
    await admin.start()
    try:
        for topic in (TOPIC_INSTANCES, TOPIC_INDEXED):
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    for _ in range(50):
        # aiokafka has no public call that refreshes the consumer's own metadata
        await consumer._client.force_metadata_update()
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        await asyncio.sleep(0.1)
    pytest.fail(f"topic {topic} has no partitions")


@pytest.fixture
async def storage(
    request: pytest.FixtureRequest, infra_env: dict[str, str], bucket_name: str
) -> AsyncIterator[StorageApp]:
    """Storage; an indirect parameter sets its cap on the header carried in InstanceStored."""
    cap: int | None = getattr(request, "param", None)
    caps = {} if cap is None else {"event_header_cap_bytes": cap}
    app = await start_storage(bucket_name, kafka_retry_s=0.2, **caps)
    yield app
    await app.stop()


# The header of a stored instance reaches the indexer three ways; each must index it the same.
HEADER_PATHS = pytest.mark.parametrize(
    "storage",
    [
        pytest.param(None, id="header-in-event"),
        # CT_small's header is 6 288 bytes, rtplan.dcm (no pixels) 2 672: both over a 1 KiB cap.
        pytest.param(1024, id="over-the-cap"),
        # A cap of 0 gives events byte for byte like those of storage before header_part10
        # (test_storage_events checks that).
        pytest.param(0, id="event-without-header-field"),
    ],
    indirect=True,
)


@pytest.fixture
async def indexed_events(infra_env: dict[str, str]) -> AsyncIterator[AIOKafkaConsumer]:
    """A reader of InstanceIndexed, positioned at the end before the test acts."""
    kafka = KafkaSettings()
    await _ensure_topics(kafka)
    consumer = AIOKafkaConsumer(**kafka_client_options(kafka), enable_auto_commit=False)
    await consumer.start()
    partitions = await _partitions(consumer, TOPIC_INDEXED)
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)
    yield consumer
    await consumer.stop()


async def _eventually(check: Callable[[], Awaitable[bool]], within: float = 45.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"condition not reached within {within} s")
        await asyncio.sleep(0.2)


@HEADER_PATHS
@pytest.mark.parametrize("name", ["CT_small.dcm", "rtplan.dcm"])  # header + pixels; header only
async def test_stored_instance_becomes_findable_then_deleted(
    storage: StorageApp,
    indexed_events: AIOKafkaConsumer,
    tmp_path: Path,
    tenant: str,
    name: str,
    hydra: Hydra,
) -> None:
    indexer = await start_indexer(
        storage.grpc_port,
        tmp_path / "index.sqlite",
        header_prefix_bytes=1024,  # smaller than the header: a read from storage reads more
    )
    storage_channel = open_channel(f"127.0.0.1:{storage.grpc_port}", client_tls())
    query_channel = plain_aio_channel(
        f"127.0.0.1:{indexer.grpc_port}",
        interceptors=bearer_interceptors(hydra.client(tenant, [Role.QUERY])),
    )
    try:
        path = get_testdata_file(name)
        assert path is not None
        data = await asyncio.to_thread(Path(path).read_bytes)
        dataset = dcmread(path, stop_before_pixels=True)
        ref = instance_ref_of(data, tenant)
        await StorageClient(storage_channel, timeout=30).put(ref, data)

        query = pb_grpc.QueryServiceStub(query_channel)
        request = pb.FindStudiesRequest(
            query=pb.Query(
                tenant=tenant,
                match={"PatientName": str(dataset.PatientName)},
                return_keys=["PatientID", "StudyDate"],
            )
        )
        found: list[pb.FindStudiesResponse] = []

        async def study_found() -> bool:
            response = await query.FindStudies(request)
            found.append(response)
            return response.total_count == 1

        await _eventually(study_found)
        study = json.loads(found[-1].datasets[0])
        assert values(study, "0020000D") == [dataset.StudyInstanceUID]
        assert values(study, "00100020") == [dataset.PatientID]
        assert values(study, "00080020") == [dataset.StudyDate]
        assert values(study, "00201208") == [1]

        metadata = await query.GetInstanceMetadata(
            pb.GetInstanceMetadataRequest(tenant=tenant, sop_instance_uid=dataset.SOPInstanceUID)
        )
        header_json = json.loads(metadata.dataset)
        assert header_json["00080018"]["Value"] == [dataset.SOPInstanceUID]
        assert "7FE00010" not in header_json  # no pixel data in the index

        indexed = await _next_indexed(indexed_events, tenant)
        assert indexed.instance.sop_instance_uid == dataset.SOPInstanceUID

        await StorageClient(storage_channel, timeout=30).delete(ref, all_versions=True)

        async def study_gone() -> bool:
            response = await query.FindStudies(request)
            return response.total_count == 0

        await _eventually(study_gone)
    finally:
        await query_channel.close()
        await storage_channel.close()
        await indexer.stop()


async def _next_indexed(consumer: AIOKafkaConsumer, tenant: str) -> events_pb.InstanceIndexed:
    async def wait() -> events_pb.InstanceIndexed:
        while True:
            record = await consumer.getone()
            if header(record, "ce_type") != "pacs.events.v1.InstanceIndexed":
                continue
            event = events_pb.InstanceIndexed.FromString(record.value or b"")
            if event.instance.tenant == tenant:
                return event

    return await asyncio.wait_for(wait(), 30)


def _closed_port() -> int:
    """A loopback port nothing listens on: every call to it fails at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_header_in_the_event_is_indexed_without_reading_storage(
    storage: StorageApp,
    indexed_events: AIOKafkaConsumer,
    tmp_path: Path,
    tenant: str,
    hydra: Hydra,
) -> None:
    # The indexer is given a storage address where nothing answers: every read from storage
    # would fail (retriably, so the event would wait forever), and the instance can only
    # become queryable from the header that its event carries.
    indexer = await start_indexer(_closed_port(), tmp_path / "index.sqlite")
    storage_channel = open_channel(f"127.0.0.1:{storage.grpc_port}", client_tls())
    query_channel = plain_aio_channel(
        f"127.0.0.1:{indexer.grpc_port}",
        interceptors=bearer_interceptors(hydra.client(tenant, [Role.QUERY])),
    )
    try:
        path = get_testdata_file("CT_small.dcm")
        assert path is not None
        data = await asyncio.to_thread(Path(path).read_bytes)
        dataset = dcmread(path, stop_before_pixels=True)
        ref = instance_ref_of(data, tenant)
        await StorageClient(storage_channel, timeout=30).put(ref, data)

        indexed = await _next_indexed(indexed_events, tenant)
        assert indexed.instance.sop_instance_uid == dataset.SOPInstanceUID
        query = pb_grpc.QueryServiceStub(query_channel)
        metadata = await query.GetInstanceMetadata(
            pb.GetInstanceMetadataRequest(tenant=tenant, sop_instance_uid=dataset.SOPInstanceUID)
        )
        header_json = json.loads(metadata.dataset)
        assert header_json["00100010"]["Value"] == [{"Alphabetic": str(dataset.PatientName)}]
        assert header_json["00280010"]["Value"] == [dataset.Rows]
        assert "7FE00010" not in header_json
    finally:
        await query_channel.close()
        await storage_channel.close()
        await indexer.stop()

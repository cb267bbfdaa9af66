"""The index-lag gate in the C-STORE path: with the real storage service, the real Kafka and
a consumer group standing in for a working indexer that is far behind, a C-STORE waits (at
most the bound) before it is stored and then succeeds; once that indexer stops making progress,
nothing waits."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from gateway_helpers import sample_path, scu_store_dataset
from pacs_common.events import TOPIC_INSTANCES
from pacs_common.kafka_client import kafka_client_options
from pacs_common.settings import KafkaSettings
from prometheus_client import REGISTRY
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

HOLD_MAX_S = 1.0
STALL_S = 1.0


def _instance() -> Dataset:
    dataset = dcmread(sample_path("CT_small.dcm"))
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return dataset


async def _store(port: int) -> tuple[int, float]:
    started = time.monotonic()
    response = await asyncio.to_thread(scu_store_dataset, port, _instance(), ExplicitVRLittleEndian)
    return int(response.Status), time.monotonic() - started


def _holds() -> float:
    return REGISTRY.get_sample_value("pacs_gateway_index_lag_holds_total") or 0.0


async def _busy_indexer(group: str, stop: asyncio.Event) -> None:
    """A group that keeps committing (so it is seen working) without getting anywhere: it
    moves one partition's offset between 0 and 1, while every other partition stays at 0."""
    kafka = KafkaSettings()
    consumer = AIOKafkaConsumer(
        **kafka_client_options(kafka), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(TOPIC_INSTANCES, p)
            for p in sorted(consumer.partitions_for_topic(TOPIC_INSTANCES) or {0})
        ]
        ends = await consumer.end_offsets(partitions)
        busy = max(partitions, key=lambda tp: ends[tp])
        consumer.assign(partitions)
        offset = 0
        while not stop.is_set():
            offset = 1 - offset
            await consumer.commit({busy: offset})
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()


async def test_a_cstore_waits_for_a_working_indexer_that_is_behind(
    start_connected_gateway, tenant: str
) -> None:
    group = f"test-index-lag-{uuid.uuid4().hex[:8]}"
    gateway = await start_connected_gateway(
        default_tenant=tenant,
        index_lag_max_events=3,
        index_lag_hold_max_s=HOLD_MAX_S,
        index_lag_stall_s=STALL_S,
        index_lag_poll_s=0.05,
        indexer_consumer_group=group,
    )
    port = gateway.dicom_port
    # Events enough that the stand-in group, which never committed, is more than 3 behind;
    # it is not seen working yet, so these are not held.
    holds = _holds()
    for _ in range(5):
        status, _ = await _store(port)
        assert status == 0x0000
    assert _holds() == holds

    stop = asyncio.Event()
    busy = asyncio.create_task(_busy_indexer(group, stop))
    try:
        await asyncio.sleep(0.5)  # the gate sees it working
        status, seconds = await _store(port)
        assert status == 0x0000  # held, then stored: never refused
        assert _holds() == holds + 1
        assert seconds >= HOLD_MAX_S * 0.9
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await busy

    await asyncio.sleep(STALL_S + 0.5)  # no progress since: an indexer that is down
    status, _ = await _store(port)
    assert status == 0x0000
    assert _holds() == holds + 1

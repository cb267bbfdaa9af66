"""A consumer group's lag read from the real Kafka (``pacs_common.consumer_lag``)."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pacs_common.consumer_lag import ConsumerLagProbe
from pacs_common.kafka_client import kafka_client_options
from pacs_common.settings import KafkaSettings


@pytest.fixture
def kafka(infra_env: dict[str, str]) -> KafkaSettings:
    return KafkaSettings()


async def _topic_with_records(kafka: KafkaSettings, per_partition: list[int]) -> str:
    topic = f"test.lag.{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(**kafka_client_options(kafka))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, len(per_partition), 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(**kafka_client_options(kafka), acks="all")
    await producer.start()
    try:
        for partition, count in enumerate(per_partition):
            for index in range(count):
                await producer.send_and_wait(topic, b"%d" % index, partition=partition)
    finally:
        await producer.stop()
    return topic


async def _commit(kafka: KafkaSettings, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(
        **kafka_client_options(kafka), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def test_lag_counts_what_the_group_has_not_committed_past(kafka: KafkaSettings) -> None:
    topic = await _topic_with_records(kafka, [5, 3])
    group = f"test-lag-{uuid.uuid4().hex[:8]}"
    await _commit(kafka, group, {TopicPartition(topic, 0): 2, TopicPartition(topic, 1): 3})
    probe = ConsumerLagProbe(kafka)
    await probe.start()
    try:
        assert await probe.positions(group, topic) == (8, 5)
        assert await probe.lag(group, topic) == 3
        # A group that never committed counts from the start of every partition.
        assert await probe.positions(f"{group}-new", topic) == (8, 0)
        assert await probe.lag("any", f"{topic}-missing") == 0
    finally:
        await probe.stop()

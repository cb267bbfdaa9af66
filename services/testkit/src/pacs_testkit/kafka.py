"""Kafka positioning for tests and benchmarks that start consumers of their own."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pacs_common.events import TOPIC_INSTANCES
from pacs_common.kafka_client import kafka_client_options
from pacs_common.settings import KafkaSettings


async def group_at_end_of_topic(
    group_id: str, kafka: KafkaSettings, topic: str = TOPIC_INSTANCES
) -> None:
    """Commit the end of the shared instances topic (or ``topic``) as ``group_id``'s position.

    A new consumer group starts at the topic's beginning, so a test's or a benchmark's fresh
    indexer would otherwise replay every event ever published (for objects long gone from its
    bucket) while it runs. The consumer must be assigned the partitions for the commit to be
    taken.
    """
    admin = AIOKafkaAdminClient(**kafka_client_options(kafka))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [
        TopicPartition(topic, p["partition"])
        for found in described
        if found.get("error_code", 0) == 0
        for p in found["partitions"]
    ]
    if not partitions:
        return  # the topic does not exist yet: a new group starts at its beginning anyway
    consumer = AIOKafkaConsumer(
        **kafka_client_options(kafka), group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        await consumer.commit(dict(ends.items()))
    finally:
        await consumer.stop()

"""Helpers of the transcoder's integration tests: a reader of pacs.instances.v1."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from pacs_common.events import TOPIC_INSTANCES
from pacs_common.kafka_client import kafka_client_options
from pacs_common.settings import KafkaSettings
from pacs_transcoder.app import TranscoderApp

TranscoderFactory = Callable[..., Awaitable[TranscoderApp]]


class InstanceEvents:
    """Reads pacs.instances.v1 from its end (positioned before the test acts)."""

    def __init__(self) -> None:
        self.kafka = KafkaSettings()
        self.consumer = AIOKafkaConsumer(
            **kafka_client_options(self.kafka),
            group_id=f"test-transcoder-read-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )

    async def start(self) -> None:
        admin = AIOKafkaAdminClient(**kafka_client_options(self.kafka))
        await admin.start()
        try:
            await admin.create_topics([NewTopic(TOPIC_INSTANCES, 3, 1)])
        except TopicAlreadyExistsError:
            pass
        finally:
            await admin.close()
        await self.consumer.start()
        partitions = None
        for _ in range(100):
            await self.consumer._client.force_metadata_update()
            partitions = self.consumer.partitions_for_topic(TOPIC_INSTANCES)
            if partitions:
                break
            await asyncio.sleep(0.1)
        assert partitions
        assigned = [TopicPartition(TOPIC_INSTANCES, p) for p in partitions]
        self.consumer.assign(assigned)
        await self.consumer.seek_to_end(*assigned)
        for tp in assigned:
            await self.consumer.position(tp)

    async def next(
        self, accept: Callable[[ConsumerRecord[bytes, bytes]], bool], within: float = 60.0
    ) -> ConsumerRecord[bytes, bytes]:
        """The next record ``accept`` approves."""

        async def wait() -> ConsumerRecord[bytes, bytes]:
            while True:
                record = await self.consumer.getone()
                if accept(record):
                    return record

        return await asyncio.wait_for(wait(), within)

    async def stop(self) -> None:
        await self.consumer.stop()

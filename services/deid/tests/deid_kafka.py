"""Reading the de-identification events back from Kafka in tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer
from google.protobuf.message import Message
from pacs_common.events import header
from pacs_common.kafka_client import kafka_client_options
from pacs_common.settings import KafkaSettings


async def wait_for_event(
    topic: str,
    message_type: type[Message],
    predicate: Callable[[Message], bool],
    within_s: float = 90.0,
) -> Message:
    """The first event of ``message_type`` on ``topic`` (from its beginning) that satisfies
    ``predicate``; fails after ``within_s`` seconds."""
    consumer = AIOKafkaConsumer(
        topic,
        **kafka_client_options(KafkaSettings()),
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    deadline = time.monotonic() + within_s
    try:
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    if header(record, "ce_type") != message_type.DESCRIPTOR.full_name:
                        continue
                    event = message_type.FromString(record.value or b"")
                    if predicate(event):
                        return event
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    raise AssertionError(f"no matching {message_type.DESCRIPTOR.name} on {topic} in {within_s}s")

"""The services' emitter: never blocks the caller, counts what it must drop, and publishes
everything queued before it stops (real Kafka)."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from pacs.events.v1 import audit_events_pb2 as audit_pb
from pacs_common import audit_events
from pacs_common.kafka_client import kafka_client_options
from pacs_common.local import free_port
from pacs_common.metrics import AUDIT_EVENTS_DROPPED
from pacs_common.settings import KafkaSettings
from pacs_testkit.audit import audit_topic


def _dropped(source: str, reason: str) -> float:
    return AUDIT_EVENTS_DROPPED.labels(source, reason)._value.get()


async def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    # Nothing listens on this port: the emitter can never publish.
    unreachable = KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}", security_protocol="PLAINTEXT")
    source = f"test-{uuid.uuid4().hex[:8]}"
    emitter = audit_events.AuditEmitter(
        unreachable, source, audit_events.AuditSettings(queue_size=3)
    )
    await emitter.start()
    try:
        # From another thread, as pynetdicom's handlers call it: it must return at once.
        def emit_five() -> None:
            for _ in range(5):
                emitter.emit(audit_events.application_activity("x", started=True))

        worker = threading.Thread(target=emit_five)
        worker.start()
        await asyncio.to_thread(worker.join, 30)
        assert not worker.is_alive()
        await asyncio.sleep(0)  # the thread-safe hand-overs run in this loop
        await asyncio.sleep(0)
        assert _dropped(source, "queue_full") == 2
    finally:
        await emitter.stop(drain_s=0.5)
    assert _dropped(source, "stopped") == 3  # unpublished at stop: counted, not hidden


@pytest.mark.integration
async def test_everything_queued_is_published_by_stop(infra_env: dict[str, str]) -> None:
    topic = audit_topic()
    emitter = audit_events.AuditEmitter(
        KafkaSettings(), "test", audit_events.AuditSettings(topic=topic)
    )
    await emitter.start()
    audit_events.install(emitter)
    for number in range(50):
        audit_events.emit(audit_events.application_activity(f"svc-{number}", started=True))
    await emitter.stop()
    assert emitter.published == 50
    audit_events.emit(audit_events.application_activity("late", started=True))  # uninstalled

    consumer = AIOKafkaConsumer(
        topic,
        **kafka_client_options(KafkaSettings()),
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        received: list[audit_pb.AuditEvent] = []
        async with asyncio.timeout(60):
            while len(received) < 50:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    received += [audit_pb.AuditEvent.FromString(r.value) for r in records]
    finally:
        await consumer.stop()
    assert len({event.id for event in received}) == 50
    assert all(event.source == "test" and event.event_time for event in received)

"""The consume loop cannot silently stop, and a record that keeps failing cannot stall its
partition (pacs_common.events.EventConsumer), on a real Kafka topic of its own."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from aiokafka import ConsumerRecord
from indexer_helpers import make_instance
from pacs_common.events import dead_letter_topic
from pacs_indexer.consumer import IndexEventHandler
from pacs_indexer.database import Database
from pydicom.uid import generate_uid
from test_indexer_batches import (  # the topic fixture and event helpers of the batch tests
    Topic,
    _create,
    _NoStorage,
    _rows,
    _time,
    _until,
    stored,
    topic,  # noqa: F401  (a fixture)
)

pytestmark = pytest.mark.integration


async def test_a_failed_consume_loop_turns_unhealthy_and_is_restarted(
    topic: Topic,  # noqa: F811  (the imported fixture)
    database: Database,
    tenant: str,
) -> None:
    """The Kafka consumer under the loop dies (as when its connection breaks for good): the
    loop reports NOT_SERVING, starts a new consumer, reports SERVING again and goes on from
    the committed offsets."""
    study, series = generate_uid(), generate_uid()
    health: list[bool] = []

    async def on_health(healthy: bool) -> None:
        health.append(healthy)

    handler = IndexEventHandler(database, _NoStorage(), topic.publisher)
    consumer = topic.consumer(handler)
    consumer.on_health = on_health
    await consumer.start()
    try:
        await topic.publish([stored(tenant, make_instance(study, series), _time(1))])
        await _until(lambda: len(_rows(database, tenant)) == 1)
        assert consumer._consumer is not None
        await consumer._consumer.stop()  # the loop's next fetch fails
        await _until(lambda: consumer.stats.restarts == 1)
        await topic.publish([stored(tenant, make_instance(study, series), _time(2))])
        await _until(lambda: len(_rows(database, tenant)) == 2, within=90)
    finally:
        await consumer.stop()
    assert health[:3] == [True, False, True]
    assert await topic.committed(consumer.group_id) == await topic.ends()


async def test_a_record_that_keeps_failing_is_dead_lettered_after_bounded_retries(
    topic: Topic,  # noqa: F811  (the imported fixture)
    database: Database,
    tenant: str,
) -> None:
    """A handler failing on one record with an error that is neither retriable nor permanent
    (a bug): that record is tried max_retries + 1 times, then dead-lettered, and the records
    after it on the same partition are indexed."""
    study, series = generate_uid(), generate_uid()
    poison = make_instance(study, series)
    events = [stored(tenant, make_instance(study, series), _time(i)) for i in range(3)]
    events.insert(1, stored(tenant, poison, _time(9)))
    attempts: list[int] = []

    class Flaky(IndexEventHandler):
        async def __call__(self, record: ConsumerRecord[bytes, bytes]) -> None:
            if str(poison.SOPInstanceUID).encode() in (record.value or b""):
                attempts.append(1)
                raise RuntimeError("a bug in the handler")
            await super().__call__(record)

        async def handle_batch(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
            if any(str(poison.SOPInstanceUID).encode() in (r.value or b"") for r in records):
                raise RuntimeError("a bug in the handler")
            await super().handle_batch(records)

    handler = Flaky(database, _NoStorage(), topic.publisher)
    consumer = topic.consumer(handler)
    await _create(topic.kafka, dead_letter_topic(consumer.group_id))
    await topic.publish(events)
    await consumer.start()
    try:
        await _until(lambda: consumer.stats.handled + consumer.stats.dead_lettered == 4)
    finally:
        await consumer.stop()
    assert consumer.stats.dead_lettered == 1
    assert len(attempts) == consumer.settings.max_retries + 1
    assert len(_rows(database, tenant)) == 3
    assert await topic.committed(consumer.group_id) == await topic.ends()

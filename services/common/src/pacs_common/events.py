"""Kafka events: topic names, CloudEvents binary-mode headers, a publisher and a consumer loop.

Events are protobuf messages from ``pacs.events.v1`` travelling as CloudEvents in Kafka binary
mode: the value is the serialized message and the headers carry ``ce_specversion``, ``ce_id``,
``ce_source``, ``ce_type``, ``ce_time``, ``content-type`` and the W3C ``traceparent``. The key is
the StudyInstanceUID so that one study's events stay in order on one partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import trace

from pacs_common.errors import UnavailableError, is_permanent, is_retriable
from pacs_common.kafka_client import kafka_client_options
from pacs_common.logging import redact_uids
from pacs_common.metrics import (
    KAFKA_CONSUMER_LAG,
    KAFKA_EVENTS_CONSUMED,
    KAFKA_PRODUCE_DURATION,
    init_consumer_metrics,
)
from pacs_common.settings import KafkaSettings
from pacs_common.telemetry import configure_tracing, extract_context, inject_headers

log = logging.getLogger(__name__)

TOPIC_INSTANCES = "pacs.instances.v1"
"""InstanceStored and InstanceDeleted, keyed by StudyInstanceUID."""
TOPIC_INDEXED = "pacs.indexed.v1"
"""InstanceIndexed."""
TOPIC_WORKFLOW = "pacs.workflow.v1"
"""Patient, order, procedure step and report events (pacs.events.v1 workflow_events.proto),
keyed by tenant + "/" + PatientID."""
CONTENT_TYPE = "application/protobuf"
BATCH_MAX_RECORDS = 200
"""Most records of one partition handed to a batch handler at once."""
REBALANCE_TIMEOUT_MS = 60_000
"""How long a rebalance waits for a member whose revocation is finishing its batches."""
LAG_INTERVAL_S = 5.0
"""How often a consumer refreshes ``pacs_kafka_consumer_lag`` (also while its handler is stuck)."""


RESTART_DELAY_S = 1.0
"""First wait before a failed consume loop is restarted (doubling up to 30 s)."""


def dead_letter_topic(group_id: str) -> str:
    """The dead-letter topic of one consumer group."""
    return f"pacs.deadletter.{group_id}.v1"


def event_type(message: Message) -> str:
    """CloudEvents type of a payload: its full protobuf name."""
    return message.DESCRIPTOR.full_name


def now_rfc3339() -> str:
    """Current UTC time in RFC 3339 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cloudevent_headers(message: Message, source: str) -> list[tuple[str, bytes]]:
    """CloudEvents 1.0 Kafka binary-mode headers plus the trace context."""
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", str(uuid.uuid4()).encode()),
        ("ce_source", source.encode()),
        ("ce_type", event_type(message).encode()),
        ("ce_time", now_rfc3339().encode()),
        ("content-type", CONTENT_TYPE.encode()),
        *inject_headers(),
    ]


def header(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    """One header of a consumed record, decoded."""
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode(errors="replace")
    return None


class EventPublisher:
    """Publishes protobuf events and waits for the brokers' acknowledgement (``acks=all``)."""

    def __init__(self, settings: KafkaSettings, source: str) -> None:
        self.settings = settings
        self.source = source
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Connect. Raises :class:`UnavailableError` if no broker answers."""
        # Events carry W3C trace context; without an SDK provider there is no span to carry.
        configure_tracing(self.source)
        producer = AIOKafkaProducer(
            **kafka_client_options(self.settings),
            client_id=f"{self.settings.client_id}-{self.source}",
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=self.settings.request_timeout_ms,
            linger_ms=0,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise UnavailableError(
                f"Kafka at {self.settings.bootstrap} unreachable: {exc}"
            ) from exc
        self._producer = producer

    async def stop(self) -> None:
        """Flush and disconnect; safe to call twice."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def publish(self, topic: str, key: str, message: Message) -> None:
        """Send one event and wait until the brokers acknowledged it.

        Raises:
            UnavailableError: Kafka did not acknowledge in time; the event may or may not exist,
                so callers retry and consumers stay idempotent.
        """
        if self._producer is None:
            raise UnavailableError("event publisher is not started")
        tracer = trace.get_tracer("pacs_common.events")
        with tracer.start_as_current_span(f"publish {topic}", kind=trace.SpanKind.PRODUCER):
            await self._send(topic, key, message)

    async def publish_many(self, topic: str, events: Sequence[tuple[str, Message]]) -> None:
        """Send ``(key, message)`` events, then wait until the brokers acknowledged all of them.

        All are handed to the producer before the first acknowledgement is awaited, so a batch
        costs about one round trip instead of one per event; each key's events keep their order.

        Raises:
            UnavailableError: some event was not acknowledged in time (any of them may exist).
        """
        if not events:
            return
        if self._producer is None:
            raise UnavailableError("event publisher is not started")
        producer = self._producer
        tracer = trace.get_tracer("pacs_common.events")
        started = time.perf_counter()
        with tracer.start_as_current_span(f"publish {topic}", kind=trace.SpanKind.PRODUCER):
            try:
                async with asyncio.timeout(self.settings.request_timeout_ms / 1000):
                    acks = [
                        await producer.send(
                            topic,
                            value=message.SerializeToString(),
                            key=key.encode(),
                            headers=cloudevent_headers(message, self.source),
                        )
                        for key, message in events
                    ]
                    await asyncio.gather(*acks)
            except (KafkaError, TimeoutError) as exc:
                raise UnavailableError(f"Kafka did not acknowledge the events: {exc!r}") from exc
        KAFKA_PRODUCE_DURATION.labels(topic).observe(time.perf_counter() - started)

    async def _send(self, topic: str, key: str, message: Message) -> None:
        assert self._producer is not None
        started = time.perf_counter()
        try:
            await asyncio.wait_for(
                self._producer.send_and_wait(
                    topic,
                    value=message.SerializeToString(),
                    key=key.encode(),
                    headers=cloudevent_headers(message, self.source),
                ),
                timeout=self.settings.request_timeout_ms / 1000,
            )
        except (KafkaError, TimeoutError) as exc:
            raise UnavailableError(f"Kafka did not acknowledge the event: {exc!r}") from exc
        KAFKA_PRODUCE_DURATION.labels(topic).observe(time.perf_counter() - started)


Handler = Callable[[ConsumerRecord[bytes, bytes]], Awaitable[None]]
BatchHandler = Callable[[Sequence[ConsumerRecord[bytes, bytes]]], Awaitable[None]]
"""Handles consecutive records of one partition, in offset order, as one unit: all or none."""


class _RevokedError(Exception):
    """The partition of the batch in hand was taken away: stop without committing."""


@dataclass
class ConsumerStats:
    """Counters of one consumer loop, for tests and metrics."""

    handled: int = 0
    dead_lettered: int = 0
    batches: int = 0
    restarts: int = 0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Tracks the partitions a consumer owns; a revocation waits for the batches in hand to be
    handled and committed (a batch on a revoked partition that is stuck retrying gives up)."""

    def __init__(self, owner: EventConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.owner._owned.difference_update(revoked)
        async with self.owner._in_hand:
            pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.owner._owned.update(assigned)


def _consume_span(topic: str, batch: list[ConsumerRecord[bytes, bytes]]) -> Any:
    """The CONSUMER span of one batch: linked to every record's producer span (OpenTelemetry's
    messaging conventions for batches), and the child of that span when the batch is a single
    record, so that one C-STORE stays one trace from the gateway to the indexer."""
    contexts = [extract_context(list(record.headers or ())) for record in batch]
    links = [
        trace.Link(span_context)
        for context in contexts
        if (span_context := trace.get_current_span(context).get_span_context()).is_valid
    ]
    return trace.get_tracer("pacs_common.events").start_as_current_span(
        f"consume {topic}",
        context=contexts[0] if len(batch) == 1 else None,
        kind=trace.SpanKind.CONSUMER,
        links=links,
        attributes={"messaging.batch.message_count": len(batch)},
    )


async def _quietly(awaitable: Awaitable[Any]) -> None:
    """Await a stopping step, logging (not raising) what a broken connection leaves behind;
    a cancellation of the caller itself still propagates."""
    try:
        await awaitable
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception:
        log.warning("error while stopping a Kafka consumer", exc_info=True)


class EventConsumer:
    """Consumes topics with manual commits: an offset is committed only after its handler's
    side effect is committed, or after the record went to the dead-letter topic.

    A handler that keeps failing with a retriable error is retried with backoff without limit
    (the dependency is down; dead-lettering would lose work). A permanent failure (the event
    itself is invalid: retrying cannot help) goes to the group's dead-letter topic at once, with
    the error in its headers; any other failure is retried ``max_retries`` times first.

    With a ``batch_handler`` the consumer works in batches, partitions side by side: what one
    fetch returned for a partition (whatever arrived while the previous batch was handled, so
    there is no waiting to fill one) is cut into batches of at most ``batch_max_records``
    consecutive records; each partition's batches run one after the other in offset order (a
    study's events are on one partition), different partitions' batches concurrently, and a
    partition's offset is committed past a batch only after the batch handler returned. A
    retriable failure retries the whole batch (handlers are idempotent); any other failure
    hands that batch's records to ``handler`` one by one, with the rules above, so only the bad
    record is dead-lettered. On a rebalance, revocation waits for the batches in hand to finish
    and commit; a batch stuck retrying on a revoked partition is dropped uncommitted.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        group_id: str,
        topics: list[str],
        handler: Handler,
        publisher: EventPublisher,
        *,
        batch_handler: BatchHandler | None = None,
        batch_max_records: int = BATCH_MAX_RECORDS,
        on_health: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.on_health = on_health
        self.healthy = False
        self.group_id = group_id
        self.topics = topics
        self.handler = handler
        self.publisher = publisher
        self.batch_handler = batch_handler
        self.batch_max_records = max(1, batch_max_records)
        self.stats = ConsumerStats()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        # Held while batches are handled and committed; a revocation waits for it.
        self._in_hand = asyncio.Lock()
        self._owned: set[TopicPartition] = set()

    async def start(self) -> None:
        """Join the group and start the loop in a background task (which restarts the
        consumer whenever the loop fails: :meth:`_supervise`)."""
        await self._open()
        init_consumer_metrics(self.group_id, self.topics)
        self._task = asyncio.create_task(self._supervise(), name=f"consumer-{self.group_id}")
        self._lag_task = asyncio.create_task(self._report_lag(), name=f"lag-{self.group_id}")

    async def _open(self) -> None:
        """Create, subscribe and start the Kafka consumer; report healthy."""
        consumer = AIOKafkaConsumer(
            **kafka_client_options(self.settings),
            group_id=self.group_id,
            client_id=f"{self.settings.client_id}-{self.group_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            # How long the group waits for this member to rejoin: a revocation first lets the
            # batches in hand finish (aiokafka's default is the 10 s session timeout).
            rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
        )
        consumer.subscribe(self.topics, listener=_Rebalance(self))
        try:
            await consumer.start()
        except BaseException:
            await _quietly(consumer.stop())
            raise
        self._consumer = consumer
        await self._set_health(True)

    async def _set_health(self, healthy: bool) -> None:
        changed = healthy != self.healthy
        self.healthy = healthy
        if changed and self.on_health is not None:
            await self.on_health(healthy)

    async def _supervise(self) -> None:
        """Run the consume loop; whenever it fails (a commit refused, the connection broken
        beyond aiokafka's own retries, a bug), report unhealthy, close the consumer, wait
        (backoff up to 30 s) and start a new one that resumes from the committed offsets:
        a failed loop never silently stops consuming while the process looks healthy."""
        delay = RESTART_DELAY_S
        while True:
            try:
                if self._consumer is None:
                    await self._open()
                    delay = RESTART_DELAY_S
                run = self._run if self.batch_handler is None else self._run_batches
                await run()
                raise RuntimeError("the consume loop ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.restarts += 1
                log.error(
                    "consumer loop failed; restarting",
                    extra={"group_id": self.group_id, "error": repr(exc), "delay_s": delay},
                )
                await self._set_health(False)
                consumer, self._consumer = self._consumer, None
                self._owned.clear()
                if consumer is not None:
                    await _quietly(consumer.stop())
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    @property
    def assigned(self) -> frozenset[TopicPartition]:
        """The partitions this consumer owns now (empty until the group assigned some)."""
        return frozenset(self._owned)

    async def stop(self) -> None:
        """Stop consuming; safe to call twice. A record in hand is not committed and comes
        again (handlers are idempotent). Errors of a broken connection while stopping are
        logged, not raised: there is nothing left to do with them."""
        for task in (self._lag_task, self._task):
            if task is not None:
                task.cancel()
                await _quietly(task)
        self._task = self._lag_task = None
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            # aiokafka's fetcher can re-raise the cancellation of its own retry back-off from
            # close() when the broker connection broke earlier.
            await _quietly(consumer.stop())

    async def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        async for record in consumer:
            await self._handle_with_retries(record)
            tp = TopicPartition(record.topic, record.partition)
            await consumer.commit({tp: record.offset + 1})

    async def _run_batches(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while True:
            fetched = await consumer.getmany(timeout_ms=1000)
            if not fetched:
                continue
            async with self._in_hand:
                await asyncio.gather(
                    *(
                        self._handle_partition(tp, records)
                        for tp, records in fetched.items()
                        if tp in self._owned
                    )
                )

    async def _handle_partition(
        self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]
    ) -> None:
        """Handle one partition's records batch by batch, committing after each. Stop if the
        partition was revoked (its next owner starts at the committed offset) or, rewinding to
        the batch so that nothing is skipped, if a commit failed."""
        assert self._consumer is not None
        consumer = self._consumer
        size = self.batch_max_records
        for start in range(0, len(records), size):
            batch = records[start : start + size]
            try:
                await self._handle_batch(tp, batch)
                await consumer.commit({tp: batch[-1].offset + 1})
            except (_RevokedError, CommitFailedError, IllegalStateError) as exc:
                log.warning(
                    "partition revoked with a batch in hand; its records come again",
                    extra={"topic": tp.topic, "partition": tp.partition, "error": repr(exc)},
                )
                return
            except KafkaError as exc:
                # The offsets stay where they were: re-read the batch rather than skip it.
                log.warning("offset commit failed; re-reading", extra={"error": repr(exc)})
                with contextlib.suppress(IllegalStateError):
                    consumer.seek(tp, batch[0].offset)
                return

    async def _handle_batch(
        self, tp: TopicPartition, batch: list[ConsumerRecord[bytes, bytes]]
    ) -> None:
        assert self.batch_handler is not None
        delay = 0.2
        while True:
            if tp not in self._owned:
                raise _RevokedError(str(tp))
            try:
                with _consume_span(tp.topic, batch):
                    await self.batch_handler(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_retriable(exc):
                    log.warning(
                        "batch failed; handling its records one by one",
                        extra={"topic": tp.topic, "offset": batch[0].offset, "error": repr(exc)},
                    )
                    for record in batch:
                        if tp not in self._owned:
                            raise _RevokedError(str(tp)) from exc
                        await self._handle_with_retries(record, tp)
                    return
                log.warning(
                    "retriable failure handling a batch; retrying",
                    extra={"topic": tp.topic, "offset": batch[0].offset, "error": repr(exc)},
                )
                KAFKA_EVENTS_CONSUMED.labels(self.group_id, tp.topic, "retried").inc(len(batch))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            else:
                self.stats.handled += len(batch)
                self.stats.batches += 1
                KAFKA_EVENTS_CONSUMED.labels(self.group_id, tp.topic, "ok").inc(len(batch))
                return

    async def _report_lag(self) -> None:
        """Export, per assigned partition, how many records lie between the group's committed
        offset and the end of the partition (the last stable offset: reads are read_committed)."""
        while True:
            consumer = self._consumer  # replaced when the loop restarts; None meanwhile
            try:
                if consumer is None:
                    raise KafkaError("consumer restarting")
                partitions = list(consumer.assignment())
                ends = await consumer.end_offsets(partitions) if partitions else {}
                for tp in partitions:
                    committed = await consumer.committed(tp) or 0
                    KAFKA_CONSUMER_LAG.labels(self.group_id, tp.topic, str(tp.partition)).set(
                        max(0, ends.get(tp, committed) - committed)
                    )
            except KafkaError as exc:
                log.debug("consumer lag not refreshed", extra={"error": repr(exc)})
            await asyncio.sleep(LAG_INTERVAL_S)

    async def _handle_with_retries(
        self, record: ConsumerRecord[bytes, bytes], owned: TopicPartition | None = None
    ) -> None:
        """Handle one record until it is handled or dead-lettered; with ``owned``, give up
        (raising :class:`_RevokedError`) once that partition is no longer this consumer's."""
        attempt = 0
        delay = 0.2
        while True:
            if owned is not None and owned not in self._owned:
                raise _RevokedError(str(owned))
            attempt += 1
            try:
                await self._call_handler(record)
                self.stats.handled += 1
                KAFKA_EVENTS_CONSUMED.labels(self.group_id, record.topic, "ok").inc()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_retriable(exc):
                    log.warning(
                        "retriable failure handling an event; retrying",
                        extra={"topic": record.topic, "offset": record.offset, "error": repr(exc)},
                    )
                elif is_permanent(exc) or attempt > self.settings.max_retries:
                    await self._dead_letter(record, exc)
                    KAFKA_EVENTS_CONSUMED.labels(self.group_id, record.topic, "dead_lettered").inc()
                    return
                else:
                    log.warning(
                        "failure handling an event",
                        extra={"attempt": attempt, "offset": record.offset, "error": repr(exc)},
                    )
                KAFKA_EVENTS_CONSUMED.labels(self.group_id, record.topic, "retried").inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _call_handler(self, record: ConsumerRecord[bytes, bytes]) -> None:
        token = otel_context.attach(extract_context(list(record.headers or ())))
        try:
            tracer = trace.get_tracer("pacs_common.events")
            with tracer.start_as_current_span(
                f"consume {record.topic}", kind=trace.SpanKind.CONSUMER
            ):
                await self.handler(record)
        finally:
            otel_context.detach(token)

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], exc: Exception) -> None:
        """Park a record that keeps failing; never drop it silently."""
        assert self.publisher._producer is not None
        headers: list[tuple[str, Any]] = [*(record.headers or ())]
        headers += [
            ("dlq_error", redact_uids(repr(exc))[:2000].encode()),
            ("dlq_topic", record.topic.encode()),
            ("dlq_partition", str(record.partition).encode()),
            ("dlq_offset", str(record.offset).encode()),
            ("dlq_group", self.group_id.encode()),
        ]
        while True:
            try:
                await self.publisher._producer.send_and_wait(
                    dead_letter_topic(self.group_id),
                    value=record.value,
                    key=record.key,
                    headers=headers,
                )
                break
            except KafkaError:
                log.warning("dead-letter topic unavailable; retrying")
                await asyncio.sleep(1.0)
        self.stats.dead_lettered += 1
        log.error(
            "event dead-lettered after repeated failures",
            extra={"topic": record.topic, "offset": record.offset, "error": repr(exc)},
        )

"""The indexer consuming in batches, on a real Kafka topic of its own and both databases:
a burst is indexed in few transactions, one partition's events end as applied one by one,
a poison record is dead-lettered alone, redelivery changes nothing, and a stop in the middle
commits nothing that was not indexed."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from indexer_helpers import make_instance
from pacs.events.v1 import instance_events_pb2 as events_pb
from pacs.type.v1 import instance_pb2
from pacs_common.errors import UnavailableError
from pacs_common.events import EventConsumer, EventPublisher, dead_letter_topic
from pacs_common.kafka_client import kafka_client_options
from pacs_common.settings import KafkaSettings
from pacs_indexer.consumer import IndexEventHandler
from pacs_indexer.database import Database
from pacs_indexer.header import HeaderReader
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import event, text

pytestmark = pytest.mark.integration

PARTITIONS = 3


class _NoStorage(HeaderReader):
    """Every header travels in its event; a read from storage would be a test failure."""

    def __init__(self) -> None:
        pass

    async def read(self, instance: instance_pb2.InstanceRef, size: int) -> Dataset:
        raise UnavailableError("no storage in this test")

    async def head(self, instance: instance_pb2.InstanceRef) -> instance_pb2.ObjectInfo:
        raise UnavailableError("no storage in this test")


def _part10(dataset: Dataset) -> bytes:
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def _ref(tenant: str, dataset: Dataset) -> instance_pb2.InstanceRef:
    return instance_pb2.InstanceRef(
        tenant=tenant,
        study_instance_uid=dataset.StudyInstanceUID,
        series_instance_uid=dataset.SeriesInstanceUID,
        sop_instance_uid=dataset.SOPInstanceUID,
        sop_class_uid=dataset.SOPClassUID,
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )


def stored(tenant: str, dataset: Dataset, stored_time: str) -> events_pb.InstanceStored:
    header = _part10(dataset)
    ref = _ref(tenant, dataset)
    return events_pb.InstanceStored(
        object=instance_pb2.ObjectInfo(
            instance=ref,
            key=f"{tenant}/{dataset.SOPInstanceUID}/{stored_time}",
            size=len(header),
            version_id=stored_time,
            stored_time=stored_time,
        ),
        header_part10=header,
    )


def deleted(tenant: str, dataset: Dataset, deleted_time: str) -> events_pb.InstanceDeleted:
    return events_pb.InstanceDeleted(
        instance=_ref(tenant, dataset), all_versions=True, deleted_time=deleted_time
    )


@dataclass
class Topic:
    """A fresh topic of a few partitions, and the Kafka clients of one test."""

    name: str
    kafka: KafkaSettings
    publisher: EventPublisher
    groups: list[str] = field(default_factory=list)

    async def publish(self, events: Sequence[Any]) -> None:
        """Publish InstanceStored/InstanceDeleted events keyed by their study, in order."""
        for message in events:
            ref = message.object.instance if hasattr(message, "object") else message.instance
            await self.publisher.publish(self.name, ref.study_instance_uid, message)

    async def publish_raw(self, key: str, value: bytes, ce_type: str) -> None:
        assert self.publisher._producer is not None
        await self.publisher._producer.send_and_wait(
            self.name, value=value, key=key.encode(), headers=[("ce_type", ce_type.encode())]
        )

    def consumer(
        self, handler: IndexEventHandler, group: str | None = None, **batching: Any
    ) -> EventConsumer:
        group = group or f"test-batches-{uuid.uuid4().hex[:12]}"
        self.groups.append(group)
        return EventConsumer(
            self.kafka,
            group,
            [self.name],
            handler,
            self.publisher,
            batch_handler=batching.pop("batch_handler", handler.handle_batch),
            **batching,
        )

    async def committed(self, group: str) -> dict[int, int]:
        """The group's committed offset per partition (absent: nothing committed)."""
        reader = AIOKafkaConsumer(**kafka_client_options(self.kafka), group_id=group)
        await reader.start()
        try:
            found = {}
            for p in range(PARTITIONS):
                offset = await reader.committed(TopicPartition(self.name, p))
                if offset is not None:
                    found[p] = offset
            return found
        finally:
            await reader.stop()

    async def ends(self) -> dict[int, int]:
        reader = AIOKafkaConsumer(**kafka_client_options(self.kafka))
        await reader.start()
        try:
            tps = [TopicPartition(self.name, p) for p in range(PARTITIONS)]
            return {tp.partition: o for tp, o in (await reader.end_offsets(tps)).items() if o}
        finally:
            await reader.stop()


async def _create(kafka: KafkaSettings, *names: str) -> None:
    admin = AIOKafkaAdminClient(**kafka_client_options(kafka))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, num_partitions=PARTITIONS, replication_factor=1) for name in names]
        )
    finally:
        await admin.close()


@pytest.fixture
async def topic(infra_env: dict[str, str]) -> AsyncIterator[Topic]:
    kafka = KafkaSettings()
    name = f"test.batches.{uuid.uuid4().hex[:12]}"
    await _create(kafka, name)
    publisher = EventPublisher(kafka, source="test")
    await publisher.start()
    created = Topic(name, kafka, publisher)
    yield created
    await publisher.stop()
    admin = AIOKafkaAdminClient(**kafka_client_options(kafka))
    await admin.start()
    try:
        await admin.delete_topics([name, *(dead_letter_topic(g) for g in created.groups)])
    except Exception:  # cleanup only; a leftover topic harms nothing
        pass
    finally:
        await admin.close()


@pytest.fixture
def transactions(database: Database) -> Iterator[list[int]]:
    """Counts the database transactions committed while the test runs."""
    count = [0]

    def committed(_conn: Any) -> None:
        count[0] += 1

    event.listen(database.engine, "commit", committed)
    yield count
    event.remove(database.engine, "commit", committed)


async def _all_committed(topic: Topic, consumer: EventConsumer) -> bool:
    """The group committed past every record: a batch counts as handled a moment before its
    offset is committed, and a consumer stopped in between leaves it to come again."""
    return await topic.committed(consumer.group_id) == await topic.ends()


async def _until(check: Callable[[], Awaitable[bool] | bool], within: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"condition not reached within {within} s")
        await asyncio.sleep(0.1)


def _rows(database: Database, tenant: str) -> list[tuple[Any, ...]]:
    """What the index holds for ``tenant``: every instance with its series and study counts."""
    with database.session() as session:
        return [
            tuple(row)
            for row in session.execute(
                text(
                    "SELECT st.study_instance_uid, st.number_of_series, st.number_of_instances,"
                    " se.series_instance_uid, se.number_of_instances, i.sop_instance_uid,"
                    " i.stored_time, i.dicom_json"
                    " FROM instances i JOIN series se ON i.series_pk = se.id"
                    " JOIN studies st ON se.study_pk = st.id"
                    " WHERE i.tenant = :tenant ORDER BY i.sop_instance_uid"
                ),
                {"tenant": tenant},
            )
        ]


def _time(second: int) -> str:
    return f"2026-11-30T10:00:{second:02d}.000Z"


def _burst(tenant: str, studies: int, per_study: int) -> list[events_pb.InstanceStored]:
    events = []
    for s in range(studies):
        study, series = generate_uid(), generate_uid()
        for i in range(per_study):
            ds = make_instance(study, series, PatientID=f"P{s}", InstanceNumber=i + 1)
            events.append(stored(tenant, ds, _time(i)))
    return events


async def test_a_burst_is_indexed_in_few_transactions(
    topic: Topic, database: Database, tenant: str, transactions: list[int]
) -> None:
    events = _burst(tenant, studies=12, per_study=10)
    await topic.publish(events)
    handler = IndexEventHandler(database, _NoStorage(), topic.publisher)
    consumer = topic.consumer(handler)
    await consumer.start()
    try:
        await _until(lambda: consumer.stats.handled == len(events))
        await _until(lambda: _all_committed(topic, consumer))  # commits follow the handling
    finally:
        await consumer.stop()
    indexed_in = transactions[0]
    rows = _rows(database, tenant)
    assert len(rows) == len(events)  # every instance findable
    assert {row[2] for row in rows} == {10}  # NumberOfStudyRelatedInstances
    # One transaction per batch, at most a few batches per partition: far fewer than events.
    assert consumer.stats.batches <= 4 * PARTITIONS
    assert indexed_in <= consumer.stats.batches
    assert indexed_in < len(events) // 5
    assert await topic.committed(consumer.group_id) == await topic.ends()


async def test_one_partitions_events_end_as_applied_one_by_one(
    topic: Topic, database: Database, tenant: str
) -> None:
    """Store v1, store v2, delete, store v3 of one instance, and v1, v2, delete of another,
    in one batch end like the same events handled one at a time."""
    handler = IndexEventHandler(database, _NoStorage(), topic.publisher)
    study, series = generate_uid(), generate_uid()
    kept, gone = generate_uid(), generate_uid()

    def events(name: str) -> list[Any]:
        def version(sop: str, n: int) -> Dataset:
            return make_instance(study, series, sop, PatientID="P1", StudyDescription=f"v{n}")

        return [
            stored(name, version(kept, 1), _time(1)),
            stored(name, version(gone, 1), _time(1)),
            stored(name, version(kept, 2), _time(2)),
            stored(name, version(gone, 2), _time(2)),
            deleted(name, version(kept, 0), _time(3)),
            deleted(name, version(gone, 0), _time(3)),
            stored(name, version(kept, 3), _time(4)),
        ]

    one_by_one = f"{tenant}-1by1"
    await topic.publish(events(tenant) + events(one_by_one))
    consumer = topic.consumer(handler)
    await consumer.start()
    try:
        await _until(lambda: consumer.stats.handled == 14)
    finally:
        await consumer.stop()
    assert consumer.stats.batches == 1  # one study: one partition, one fetch
    batched = _rows(database, tenant)
    assert [(row[5], row[6]) for row in batched] == [(kept, "2026-11-30T10:00:04.000000Z")]
    assert '"v3"' in batched[0][7]

    # A new group reads the topic again, one event per batch (the first tenant's too, which
    # changes nothing, as redelivery must not).
    serial = topic.consumer(handler, batch_max_records=1)
    await serial.start()
    try:
        await _until(lambda: serial.stats.handled == 14)
    finally:
        await serial.stop()
    assert serial.stats.batches == 14

    assert serial.stats.batches == 14
    assert _rows(database, one_by_one) == batched


async def test_a_poison_record_is_dead_lettered_alone(
    topic: Topic, database: Database, tenant: str
) -> None:
    study, series = generate_uid(), generate_uid()
    events = [stored(tenant, make_instance(study, series), _time(i)) for i in range(5)]
    await topic.publish(events[:2])
    await topic.publish_raw(study, b"\xff not a protobuf", "pacs.events.v1.InstanceStored")
    await topic.publish(events[2:])
    handler = IndexEventHandler(database, _NoStorage(), topic.publisher)
    consumer = topic.consumer(handler)
    await _create(topic.kafka, dead_letter_topic(consumer.group_id))
    await consumer.start()
    try:
        await _until(lambda: consumer.stats.handled + consumer.stats.dead_lettered == 6)
        await _until(lambda: _all_committed(topic, consumer))  # commits follow the handling
    finally:
        await consumer.stop()
    assert consumer.stats.dead_lettered == 1
    assert len(_rows(database, tenant)) == 5
    assert await topic.committed(consumer.group_id) == await topic.ends()

    reader = AIOKafkaConsumer(
        dead_letter_topic(consumer.group_id),
        **kafka_client_options(topic.kafka),
        auto_offset_reset="earliest",
    )
    await reader.start()
    try:
        parked = await asyncio.wait_for(reader.getone(), 30)
    finally:
        await reader.stop()
    assert parked.value == b"\xff not a protobuf"
    assert dict(parked.headers)["dlq_offset"] == b"2"


async def test_redelivering_a_whole_batch_changes_nothing(
    topic: Topic, database: Database, tenant: str
) -> None:
    events = _burst(tenant, studies=6, per_study=5)
    await topic.publish(events)
    handler = IndexEventHandler(database, _NoStorage(), topic.publisher)
    for _ in range(2):  # a new group reads the whole topic again
        consumer = topic.consumer(handler)
        await consumer.start()
        try:
            await _until(lambda c=consumer: c.stats.handled == len(events))  # type: ignore[misc]
        finally:
            await consumer.stop()
        if _ == 0:
            first = _rows(database, tenant)
    assert len(first) == len(events)
    assert _rows(database, tenant) == first


async def test_a_stop_in_the_middle_commits_nothing_it_did_not_index(
    topic: Topic, database: Database, tenant: str
) -> None:
    events = _burst(tenant, studies=6, per_study=5)
    await topic.publish(events)
    handler = IndexEventHandler(database, _NoStorage(), topic.publisher)
    in_hand = asyncio.Event()

    async def stuck(records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        in_hand.set()
        await asyncio.Event().wait()  # the process is stopped before this batch is indexed

    consumer = topic.consumer(handler, batch_handler=stuck)
    await consumer.start()
    await asyncio.wait_for(in_hand.wait(), 60)
    await consumer.stop()
    assert await topic.committed(consumer.group_id) == {}
    assert _rows(database, tenant) == []

    again = topic.consumer(handler, group=consumer.group_id)
    await again.start()
    try:
        await _until(lambda: again.stats.handled == len(events))
    finally:
        await again.stop()
    assert len(_rows(database, tenant)) == len(events)


async def test_a_rebalance_waits_for_the_batch_in_hand(
    topic: Topic, database: Database, tenant: str
) -> None:
    events = _burst(tenant, studies=6, per_study=5)
    await topic.publish(events)
    handler = IndexEventHandler(database, _NoStorage(), topic.publisher)
    in_hand, release = asyncio.Event(), asyncio.Event()

    async def slow(records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        in_hand.set()
        await release.wait()
        await handler.handle_batch(records)

    first = topic.consumer(handler, batch_handler=slow)
    await first.start()
    second: EventConsumer | None = None
    try:
        await asyncio.wait_for(in_hand.wait(), 60)
        second = topic.consumer(handler, group=first.group_id)
        # start() returns once the group assigned the new member its partitions.
        joining = asyncio.create_task(second.start())
        await _until(lambda: not first.assigned)  # the revocation began ...
        await asyncio.sleep(1.0)
        assert not second.assigned  # ... and waits for the batches in hand
        release.set()
        await joining
        await _until(lambda: bool(second and second.assigned))
        await _until(_committed_all(topic, first.group_id))
    finally:
        await first.stop()
        if second is not None:
            await second.stop()
    assert len(_rows(database, tenant)) == len(events)


async def test_a_batch_retrying_on_a_revoked_partition_gives_up_uncommitted(
    topic: Topic, database: Database, tenant: str
) -> None:
    events = _burst(tenant, studies=6, per_study=5)
    await topic.publish(events)
    handler = IndexEventHandler(database, _NoStorage(), topic.publisher)
    failing = True

    async def database_down(records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        if failing:
            raise UnavailableError("index database unavailable")
        await handler.handle_batch(records)

    first = topic.consumer(handler, batch_handler=database_down)
    await first.start()
    second: EventConsumer | None = None
    try:
        await _until(lambda: bool(first.assigned))
        second = topic.consumer(handler, group=first.group_id, batch_handler=database_down)
        # The retrying batches give their partitions up at once, so the group rebalances well
        # before it would drop the first member (after REBALANCE_TIMEOUT_MS, 60 s).
        await asyncio.wait_for(second.start(), 30)
        assert await topic.committed(first.group_id) == {}
        failing = False
        await _until(_committed_all(topic, first.group_id))
    finally:
        await first.stop()
        if second is not None:
            await second.stop()
    assert len(_rows(database, tenant)) == len(events)


def _committed_all(topic: Topic, group: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await topic.committed(group) == await topic.ends()

    return check

"""A consumer group's lag on a topic: how many records it has not committed past.

Computed from Kafka itself (the group's committed offsets against the ends of the topic's
partitions), not from this process's counters, so that it is right after a restart and for a
group whose consumers run in other processes: the router's destination queues, the indexer as
the gateway sees it (:mod:`pacs_gateway.index_lag`). Reads are ``read_committed`` everywhere,
so the end is the last stable offset.
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from pacs_common.errors import UnavailableError
from pacs_common.kafka_client import kafka_client_options
from pacs_common.settings import KafkaSettings

log = logging.getLogger(__name__)


class ConsumerLagProbe:
    """Measures consumer lag of (group, topic) pairs; ``start()`` / ``stop()``."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Connect. Raises :class:`UnavailableError` if no broker answers."""
        admin = AIOKafkaAdminClient(**kafka_client_options(self.settings))
        consumer = AIOKafkaConsumer(
            **kafka_client_options(self.settings), isolation_level="read_committed"
        )
        try:
            await admin.start()
            await consumer.start()
        except KafkaError as exc:
            await consumer.stop()
            await admin.close()
            raise UnavailableError(f"Kafka unreachable: {exc!r}") from exc
        self._admin, self._consumer = admin, consumer

    async def stop(self) -> None:
        """Disconnect; safe to call twice."""
        admin, self._admin = self._admin, None
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
        if admin is not None:
            await admin.close()

    async def lag(self, group: str, topic: str) -> int:
        """Records of ``topic`` that ``group`` has not committed past (0 if the topic does not
        exist yet).

        Raises:
            UnavailableError: Kafka did not answer.
        """
        ends, committed = await self.positions(group, topic)
        return ends - committed

    async def positions(self, group: str, topic: str) -> tuple[int, int]:
        """The ends of ``topic``'s partitions and ``group``'s committed offsets, each summed
        over the partitions (a partition it never committed counts from its start; the
        committed sum grows as the group makes progress).

        Raises:
            UnavailableError: Kafka did not answer.
        """
        if self._admin is None or self._consumer is None:
            raise UnavailableError("consumer lag probe is not started")
        try:
            partitions = await self._partitions(topic)
            if not partitions:
                return 0, 0
            ends = await self._consumer.end_offsets(partitions)
            committed = await self._admin.list_consumer_group_offsets(group, partitions=partitions)
        except KafkaError as exc:
            raise UnavailableError(f"Kafka did not answer: {exc!r}") from exc
        end_total = committed_total = 0
        for tp in partitions:
            meta = committed.get(tp)
            end = ends.get(tp, 0)
            position = meta.offset if meta is not None and meta.offset >= 0 else 0
            end_total += end
            committed_total += min(position, end)
        return end_total, committed_total

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        assert self._admin is not None
        described = await self._admin.describe_topics([topic])
        return [
            TopicPartition(topic, p["partition"])
            for found in described
            if found.get("error_code", 0) == 0
            for p in found["partitions"]
        ]

"""Dead letters on Kafka: reading them, remembering which were handled, replaying them.

A consumer group parks an event that failed every retry on its dead-letter topic
``pacs.deadletter.<group>.v1`` (:func:`pacs_common.events.dead_letter_topic`), with the original
key, value and headers plus ``dlq_error``, ``dlq_topic``, ``dlq_partition``, ``dlq_offset`` and
``dlq_group``. A dead letter is named by where it lies: ``<group>:<partition>:<offset>`` of the
dead-letter record (a group name cannot contain ``:`` if it has a dead-letter topic: topic names
allow only ``[a-zA-Z0-9._-]``).

**Handled markers.** Kafka cannot delete one record from a topic, so what an operator did with
a dead letter (replayed, dropped) is recorded in a compacted topic of its own,
:data:`HANDLED_TOPIC`, keyed by the dead letter's ID, whose value is a small JSON object (the
outcome, reason, operator, time, and for a replay where the event went). Compaction keeps the
latest marker of every ID for ever, so the topic stays as small as the number of dead letters
ever handled and reading it whole is cheap. The alternative, committed offsets of an admin
consumer group per dead-letter partition, cannot express "record 7 handled, record 5 not"
(an offset is a watermark: everything before it counts as handled) and keeps no reason or
outcome; a table in a service's database would need a service to own it, where this CLI needs
only Kafka. The marker topic is named outside ``pacs.deadletter.*`` so that it can never be
mistaken for a group's dead-letter topic.

Access is direct: the CLI connects to Kafka with the same ``PACS_KAFKA_*`` settings and
credentials as the services (:func:`pacs_common.kafka_client.kafka_client_options`, SASL_SSL),
which is fine for an operator's tool that runs where those credentials are available.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from pacs_common.errors import InvalidArgumentError, NotFoundError, UnavailableError
from pacs_common.events import dead_letter_topic
from pacs_common.kafka_client import kafka_client_options
from pacs_common.local import infra_environment
from pacs_common.settings import KafkaSettings
from pydantic import ValidationError

DEAD_LETTER_PREFIX = "pacs.deadletter."
DEAD_LETTER_SUFFIX = ".v1"
HANDLED_TOPIC = "pacs.deadletter-handled.v1"
"""Compacted: the latest handled marker of every dead letter, keyed by its ID."""
DLQ_HEADERS = ("dlq_error", "dlq_topic", "dlq_partition", "dlq_offset", "dlq_group")
REPLAYED_FROM = "replayed_from"
"""Header a replayed event carries: the ID of the dead letter it came from."""
READ_IDLE_S = 2.0
"""A read of a topic up to its end gives up when nothing arrives for this long after the end
offsets said more was there (records of an aborted transaction, or deleted by retention)."""


def kafka_settings() -> KafkaSettings:
    """The services' Kafka settings: the environment, else what ``infra/up.sh`` wrote locally.

    Raises:
        InvalidArgumentError: a setting is missing or invalid; the message names it.
    """
    env = infra_environment()
    values: dict[str, Any] = {
        key.removeprefix("PACS_KAFKA_").lower(): value
        for key, value in env.items()
        if key.startswith("PACS_KAFKA_")
    }
    if "PACS_TLS_DIR" in env:
        values["tls_dir"] = env["PACS_TLS_DIR"]
    try:
        return KafkaSettings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            (f"PACS_KAFKA_{'_'.join(map(str, e['loc'])).upper()}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise InvalidArgumentError(f"invalid Kafka settings: {problems}") from exc


def group_of_topic(topic: str) -> str | None:
    """The consumer group of a dead-letter topic; None for any other topic."""
    if topic.startswith(DEAD_LETTER_PREFIX) and topic.endswith(DEAD_LETTER_SUFFIX):
        group = topic[len(DEAD_LETTER_PREFIX) : -len(DEAD_LETTER_SUFFIX)]
        return group or None
    return None


@dataclass(frozen=True)
class DeadLetterId:
    """Where a dead letter lies: its group's dead-letter topic, partition and offset."""

    group: str
    partition: int
    offset: int

    @classmethod
    def parse(cls, text: str) -> DeadLetterId:
        """``group:partition:offset``.

        Raises:
            InvalidArgumentError: not of that form.
        """
        group, _, rest = text.strip().partition(":")
        partition, _, offset = rest.partition(":")
        if not (group and partition.isdigit() and offset.isdigit()):
            raise InvalidArgumentError(
                f"{text!r} is not a dead-letter ID (group:partition:offset, as `pacs dlq list` "
                "prints them)"
            )
        return cls(group, int(partition), int(offset))

    @property
    def topic(self) -> str:
        """The dead-letter topic it lies on."""
        return dead_letter_topic(self.group)

    def __str__(self) -> str:
        return f"{self.group}:{self.partition}:{self.offset}"


@dataclass(frozen=True)
class Handled:
    """What an operator did with a dead letter (the value of its marker)."""

    outcome: str  # "replayed" or "dropped"
    reason: str
    operator: str
    time: str
    replayed_to: str = ""  # topic:partition:offset of the replayed event

    def to_json(self) -> bytes:
        """The marker's value."""
        return json.dumps(self.__dict__, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, value: bytes) -> Handled:
        """A marker's value (unknown keys, from a later version, are ignored)."""
        data = json.loads(value)
        return cls(**{k: str(data.get(k, "")) for k in cls.__dataclass_fields__})


@dataclass
class DeadLetter:
    """One dead-lettered record and what is known about it."""

    id: DeadLetterId
    record: ConsumerRecord[bytes, bytes]
    handled: Handled | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, group: str, record: ConsumerRecord[bytes, bytes]) -> DeadLetter:
        """The dead letter ``record`` of ``group``'s dead-letter topic."""
        headers = {
            key: bytes(value).decode(errors="replace") for key, value in record.headers or ()
        }
        return cls(DeadLetterId(group, record.partition, record.offset), record, None, headers)

    def replay_headers(self, dead_letter_id: DeadLetterId) -> list[tuple[str, bytes]]:
        """The original headers (``dlq_*`` and any earlier ``replayed_from`` removed) plus
        ``replayed_from``; order and repeated keys of the rest are kept."""
        kept = [
            (key, bytes(value))
            for key, value in self.record.headers or ()
            if key not in DLQ_HEADERS and key != REPLAYED_FROM
        ]
        return [*kept, (REPLAYED_FROM, str(dead_letter_id).encode())]


class DeadLetterStore:
    """Kafka clients for one command: a reader without a group (it commits nothing, so it
    never moves anybody's position), an ``acks=all`` idempotent producer, an admin client."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        options = kafka_client_options(settings)
        client_id = f"{settings.client_id}-pacs-dlq"
        self._reader = AIOKafkaConsumer(
            **options, client_id=client_id, enable_auto_commit=False, group_id=None
        )
        self._producer = AIOKafkaProducer(
            **options,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=settings.request_timeout_ms,
        )
        self._admin = AIOKafkaAdminClient(**options, client_id=client_id)
        self._handled_topic_ready = False

    async def start(self) -> None:
        """Connect all three. Raises :class:`UnavailableError` when Kafka does not answer."""
        try:
            async with asyncio.timeout(self.settings.request_timeout_ms / 1000 * 3):
                await self._reader.start()
                await self._producer.start()
                await self._admin.start()
        except (KafkaError, TimeoutError) as exc:
            await self.stop()
            raise UnavailableError(
                f"Kafka at {self.settings.bootstrap} unreachable: {exc!r}"
            ) from exc

    async def stop(self) -> None:
        """Disconnect; safe after a failed start."""
        for stop in (self._reader.stop, self._producer.stop, self._admin.close):
            with contextlib.suppress(Exception):  # nothing left to do with a close error
                await stop()

    # --- reading ---------------------------------------------------------------------------

    async def dead_letter_groups(self) -> list[str]:
        """Every group that has a dead-letter topic."""
        topics = await self._admin.list_topics()
        return sorted(g for t in topics if (g := group_of_topic(t)) is not None)

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        """The partitions of ``topic`` (none if it does not exist), from the admin client: the
        reader's own metadata knows only topics it was assigned."""
        described = await self._admin.describe_topics([topic])
        return sorted(
            TopicPartition(topic, p["partition"])
            for found in described
            if found.get("error_code", 0) == 0
            for p in found["partitions"]
        )

    async def _read_all(self, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
        """Every record of ``topic`` from its beginning to its end now."""
        partitions = await self._partitions(topic)
        if not partitions:
            return []
        reader = self._reader
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends = await reader.end_offsets(partitions)
        waiting = {tp for tp in partitions if await reader.position(tp) < ends[tp]}
        records: list[ConsumerRecord[bytes, bytes]] = []
        while waiting:
            fetched = await reader.getmany(*waiting, timeout_ms=int(READ_IDLE_S * 1000))
            if not fetched:
                break  # the rest is not readable (aborted transactions, retention)
            for tp, batch in fetched.items():
                records += [r for r in batch if r.offset < ends[tp]]
            waiting = {tp for tp in waiting if await reader.position(tp) < ends[tp]}
        return records

    async def handled_markers(self) -> dict[str, Handled]:
        """The latest marker of every handled dead letter, by ID."""
        markers: dict[str, Handled] = {}
        for record in await self._read_all(HANDLED_TOPIC):
            if record.key is None:
                continue
            if record.value is None:  # a tombstone: the marker was withdrawn
                markers.pop(record.key.decode(), None)
                continue
            markers[record.key.decode()] = Handled.from_json(record.value)
        return markers

    async def dead_letters(self, groups: Iterable[str]) -> list[DeadLetter]:
        """The dead letters of ``groups``, oldest first per group, with their markers."""
        markers = await self.handled_markers()
        found: list[DeadLetter] = []
        for group in groups:
            for record in await self._read_all(dead_letter_topic(group)):
                letter = DeadLetter.of(group, record)
                letter.handled = markers.get(str(letter.id))
                found.append(letter)
        return found

    async def dead_letter(self, wanted: DeadLetterId) -> DeadLetter:
        """One dead letter, with its marker.

        Raises:
            NotFoundError: no record at that place (wrong ID, or removed by retention).
        """
        tp = TopicPartition(wanted.topic, wanted.partition)
        if tp not in await self._partitions(wanted.topic):
            raise NotFoundError(f"no dead letter {wanted}: {wanted.topic} has no such partition")
        reader = self._reader
        reader.assign([tp])
        ends = await reader.end_offsets([tp])
        if wanted.offset >= ends[tp]:
            raise NotFoundError(f"no dead letter {wanted}: {wanted.topic} ends before it")
        reader.seek(tp, wanted.offset)
        fetched = await reader.getmany(tp, timeout_ms=int(READ_IDLE_S * 1000), max_records=1)
        batch = fetched.get(tp, [])
        if not batch or batch[0].offset != wanted.offset:
            raise NotFoundError(f"no dead letter {wanted} (removed by the topic's retention?)")
        letter = DeadLetter.of(wanted.group, batch[0])
        letter.handled = (await self.handled_markers()).get(str(wanted))
        return letter

    # --- writing ---------------------------------------------------------------------------

    async def send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> str:
        """Publish one record and wait for every in-sync replica (``acks=all``); return its
        ``topic:partition:offset``.

        Raises:
            UnavailableError: not acknowledged in time (it may or may not exist: consumers
                are idempotent, so sending again is harmless).
        """
        try:
            async with asyncio.timeout(self.settings.request_timeout_ms / 1000):
                meta = await self._producer.send_and_wait(
                    topic, value=value, key=key, headers=headers
                )
        except (KafkaError, TimeoutError) as exc:
            raise UnavailableError(f"Kafka did not acknowledge the record: {exc!r}") from exc
        return f"{meta.topic}:{meta.partition}:{meta.offset}"

    async def ensure_handled_topic(self) -> None:
        """Create :data:`HANDLED_TOPIC` compacted, on first use (auto-creation would make it
        with the broker's default policy, delete, and markers would expire)."""
        if self._handled_topic_ready or await self._partitions(HANDLED_TOPIC):
            self._handled_topic_ready = True
            return
        brokers = (await self._admin.describe_cluster()).get("brokers", [])
        topic = NewTopic(
            HANDLED_TOPIC,
            num_partitions=1,
            replication_factor=max(1, min(3, len(brokers))),
            topic_configs={"cleanup.policy": "compact"},
        )
        with contextlib.suppress(TopicAlreadyExistsError):  # another operator was first
            await self._admin.create_topics([topic])
        self._handled_topic_ready = True

    async def mark(self, dead_letter_id: DeadLetterId, handled: Handled) -> None:
        """Record what was done with a dead letter (the latest marker wins)."""
        await self.ensure_handled_topic()
        await self.send(HANDLED_TOPIC, handled.to_json(), str(dead_letter_id).encode(), [])


@asynccontextmanager
async def open_store(settings: KafkaSettings | None = None) -> AsyncIterator[DeadLetterStore]:
    """A started :class:`DeadLetterStore`, stopped on exit."""
    store = DeadLetterStore(settings or kafka_settings())
    await store.start()
    try:
        yield store
    finally:
        await store.stop()

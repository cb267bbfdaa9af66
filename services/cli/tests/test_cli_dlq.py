"""``pacs dlq`` run as a process, as an operator runs it, against real Kafka: a real
:class:`pacs_common.events.EventConsumer` whose handler fails permanently dead-letters a real
event; the operator lists it with its reason, shows it decoded (patient data masked), replays
it once the cause is fixed (the same consumer then handles it), is refused a second replay
without ``--force``, drops another one, and a real audit service stores every replay and drop."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pacs.events.v1 import audit_events_pb2 as audit_pb
from pacs.events.v1 import instance_events_pb2 as events_pb
from pacs.type.v1 import instance_pb2
from pacs_audit.app import AuditApp
from pacs_common.errors import InvalidArgumentError
from pacs_common.events import EventConsumer, EventPublisher, header
from pacs_common.kafka_client import kafka_client_options
from pacs_common.settings import KafkaSettings
from pacs_testkit.audit import start_audit

pytestmark = pytest.mark.integration

STUDY_UID = "1.2.826.0.1.3680043.8.498.4242424242"
PATIENT_BYTES = b"\x10\x00\x10\x00PN\x0c\x00SECRET^JANE "


@dataclass
class Handler:
    """Fails permanently (the event is "invalid") until the cause is fixed."""

    broken: bool = True
    handled: list[ConsumerRecord[bytes, bytes]] = field(default_factory=list)

    async def __call__(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if self.broken:
            raise InvalidArgumentError(f"study {STUDY_UID}: PatientName not indexable")
        self.handled.append(record)


@dataclass
class Pipeline:
    kafka: KafkaSettings
    topic: str
    group: str
    audit_topic: str
    handler: Handler
    consumer: EventConsumer
    publisher: EventPublisher

    async def publish(self, sop_instance_uid: str) -> None:
        ref = instance_pb2.InstanceRef(
            tenant="tdlq",
            study_instance_uid=STUDY_UID,
            sop_instance_uid=sop_instance_uid,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        )
        event = events_pb.InstanceStored(
            object=instance_pb2.ObjectInfo(instance=ref, size=1234, version_id="v1"),
            header_part10=PATIENT_BYTES,
        )
        await self.publisher.publish(self.topic, STUDY_UID, event)


async def _eventually(check: Callable[[], Awaitable[bool] | bool], within: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if await result if isinstance(result, Awaitable) else result:
            return
        if loop.time() > deadline:
            pytest.fail(f"condition not reached within {within} s")
        await asyncio.sleep(0.2)


@pytest.fixture
async def pipeline(infra_env: dict[str, str]) -> AsyncIterator[Pipeline]:
    suffix = uuid.uuid4().hex[:12]
    kafka = KafkaSettings(max_retries=0)
    topic, group = f"test.dlq-events.{suffix}.v1", f"test-dlq-{suffix}"
    audit_topic = f"test.dlq-audit.{suffix}.v1"
    admin = AIOKafkaAdminClient(**kafka_client_options(kafka))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, num_partitions=2, replication_factor=1) for t in (topic, audit_topic)]
        )
    finally:
        await admin.close()
    publisher = EventPublisher(kafka, source="test-dlq")
    await publisher.start()
    handler = Handler()
    consumer = EventConsumer(kafka, group, [topic], handler, publisher)
    await consumer.start()
    await _eventually(lambda: len(consumer.assigned) == 2)
    yield Pipeline(kafka, topic, group, audit_topic, handler, consumer, publisher)
    await consumer.stop()
    await publisher.stop()


async def _pacs(
    pipeline: Pipeline, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pacs_cli", "dlq", *args,
        env={
            **os.environ,
            "COLUMNS": "250",
            "PACS_AUDIT_EVENTS_TOPIC": pipeline.audit_topic,
            **(env or {}),
        },
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode() + err.decode()


async def _listed(pipeline: Pipeline, *extra: str) -> list[dict[str, object]]:
    code, out = await _pacs(pipeline, "list", "--group", pipeline.group, "--json", *extra)
    assert code == 0, out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.fixture
async def audit(pipeline: Pipeline, tmp_path: Path) -> AsyncIterator[AuditApp]:
    """A real audit service consuming the test's audit topic."""
    app = await start_audit(tmp_path, pipeline.audit_topic)
    yield app
    await app.stop()


async def test_list_show_replay_drop(pipeline: Pipeline, audit: AuditApp) -> None:
    await pipeline.publish("1.2.826.0.1.3680043.8.498.1")
    await _eventually(lambda: pipeline.consumer.stats.dead_lettered == 1)

    # list: the dead letter, where it came from, its type, and why it failed (UIDs redacted)
    (row,) = await _listed(pipeline)
    dead_letter_id = str(row["id"])
    assert dead_letter_id.startswith(f"{pipeline.group}:")
    assert (row["group"], row["topic"]) == (pipeline.group, pipeline.topic)
    assert row["event_type"] == "pacs.events.v1.InstanceStored"
    assert "InvalidArgumentError" in str(row["reason"])
    assert "PatientName not indexable" in str(row["reason"])
    assert row["event_time"] and row["dead_lettered_time"] and row["handled"] is None
    code, table = await _pacs(pipeline, "list", "--group", pipeline.group)
    assert code == 0 and dead_letter_id in table and "1 dead letter(s) to handle" in table, table
    assert "study [redacted]: PatientName not indexable" in table, table
    for listing in (json.dumps(row), table):
        assert STUDY_UID not in listing and "SECRET" not in listing

    # show: decoded, patient data masked; --show-phi reveals it
    code, out = await _pacs(pipeline, "show", dead_letter_id)
    assert code == 0, out
    shown = json.loads(out)
    instance = shown["event"]["object"]["instance"]
    assert instance["tenant"] == "tdlq"
    assert instance["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.2"
    assert instance["study_instance_uid"] == "***" and shown["key"] == "***"
    assert shown["event"]["header_part10"] == f"*** ({len(PATIENT_BYTES)} bytes)"
    assert shown["event"]["object"]["size"] == 1234
    assert STUDY_UID not in out and "SECRET" not in out
    code, out = await _pacs(pipeline, "show", dead_letter_id, "--show-phi")
    assert (
        code == 0
        and json.loads(out)["event"]["object"]["instance"]["study_instance_uid"] == STUDY_UID
    )

    # replay once the cause is fixed: the same consumer now handles the original event
    pipeline.handler.broken = False
    code, out = await _pacs(pipeline, "replay", dead_letter_id, "--reason", "mapping fixed")
    assert code == 0 and f"replayed {dead_letter_id} to {pipeline.topic}:" in out, out
    await _eventually(lambda: len(pipeline.handler.handled) == 1)
    replayed = pipeline.handler.handled[0]
    assert replayed.key == STUDY_UID.encode()
    assert header(replayed, "replayed_from") == dead_letter_id
    assert header(replayed, "ce_type") == "pacs.events.v1.InstanceStored"
    assert header(replayed, "dlq_error") is None and header(replayed, "dlq_topic") is None
    stored = events_pb.InstanceStored.FromString(replayed.value or b"")
    assert stored.header_part10 == PATIENT_BYTES
    assert await _listed(pipeline) == []
    (handled,) = await _listed(pipeline, "--all")
    assert handled["handled"]["outcome"] == "replayed"  # type: ignore[index]
    assert handled["handled"]["reason"] == "mapping fixed"  # type: ignore[index]

    # a second replay is refused without --force, done with it
    code, out = await _pacs(pipeline, "replay", dead_letter_id)
    assert code == 1 and "already replayed" in out and "--force" in out, out
    assert len(pipeline.handler.handled) == 1
    code, out = await _pacs(pipeline, "replay", dead_letter_id, "--force")
    assert code == 0, out
    await _eventually(lambda: len(pipeline.handler.handled) == 2)

    # drop: another dead letter, marked handled with the reason, gone from list
    pipeline.handler.broken = True
    await pipeline.publish("1.2.826.0.1.3680043.8.498.2")
    await _eventually(lambda: pipeline.consumer.stats.dead_lettered == 2)
    (second,) = await _listed(pipeline)
    code, out = await _pacs(pipeline, "drop", str(second["id"]), "--reason", "test object")
    assert code == 0, out
    assert await _listed(pipeline) == []
    outcomes = {r["id"]: r["handled"]["outcome"] for r in await _listed(pipeline, "--all")}  # type: ignore[index]
    assert outcomes == {dead_letter_id: "replayed", second["id"]: "dropped"}
    code, out = await _pacs(pipeline, "replay", "--all", "--group", pipeline.group)
    assert code == 0 and "0 dead letter(s) replayed" in out, out

    # every replay and drop is in the audit service's trail, with the event's tenant and study
    def stored() -> list[audit_pb.AuditEvent]:
        found = audit.trail.query(tenants=None, study_instance_uid=STUDY_UID)
        return [record.event for record in found]

    await _eventually(lambda: len(stored()) >= 4)
    events = stored()
    descriptions = sorted(e.outcome_description for e in events)
    assert descriptions == sorted(
        [
            f"dead letter {dead_letter_id} replayed: mapping fixed",
            f"dead letter {dead_letter_id} replayed: ",
            f"dead letter {second['id']} dropped: test object",
            f"dead letter {dead_letter_id} shown with patient data: --show-phi",
        ]
    )
    for event in events:
        assert event.event_type == audit_pb.AUDIT_EVENT_TYPE_SECURITY_ALERT
        assert event.event_type_code == "110132" and event.source == "pacs-cli"
        assert event.tenant == "tdlq"
        assert event.actors[0].requestor and "@" in event.actors[0].user_id


async def test_replay_all_of_a_group(pipeline: Pipeline) -> None:
    for n in (1, 2, 3):
        await pipeline.publish(f"1.2.826.0.1.3680043.8.498.{n}")
    await _eventually(lambda: pipeline.consumer.stats.dead_lettered == 3)
    pipeline.handler.broken = False
    code, out = await _pacs(pipeline, "replay", "--all", "--group", pipeline.group)
    assert code == 0 and "3 dead letter(s) replayed" in out, out
    await _eventually(lambda: len(pipeline.handler.handled) == 3)
    assert await _listed(pipeline) == []


async def test_unknown_or_malformed_id_is_a_clear_error(pipeline: Pipeline) -> None:
    for args, says in (
        (("show", f"{pipeline.group}:0:999"), "no dead letter"),
        (("show", f"{pipeline.group}:7:0"), "no such partition"),
        (("replay", f"no-such-group-{uuid.uuid4().hex}:0:0"), "no dead letter"),
        (("drop", "nonsense", "--reason", "x"), "is not a dead-letter ID"),
        (("replay",), "either one ID or --all"),
    ):
        code, out = await _pacs(pipeline, *args)
        assert code == 2 and says in out, (args, out)
        assert "Traceback" not in out
    for env, says in (
        ({"PACS_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, "Kafka at 127.0.0.1:1 unreachable"),
        ({"PACS_KAFKA_SASL_USERNAME": ""}, "PACS_KAFKA_SASL_USERNAME must be set"),
    ):
        code, out = await _pacs(pipeline, "list", env=env)
        assert code == 2 and says in out and "Traceback" not in out, (env, out)

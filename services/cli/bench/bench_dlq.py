"""How long ``pacs dlq list`` and ``pacs dlq replay --all`` take for N dead letters, side by side
with bare aiokafka doing the same Kafka work (reading the topic to its end; sending N records
with acks=all one after the other), on the local Kafka.

The dead letters are written straight onto a dead-letter topic of a unique group (with the
headers a consumer's ``_dead_letter`` writes), not produced by failing a consumer N times: the
bench measures the CLI, not the consumer. ``pacs`` runs as a process, as an operator runs it,
so its figures include the interpreter's start: 3 s of CPU here, and 10-15 s of wall time on
this machine, where PYTHONDONTWRITEBYTECODE=1 makes every process compile its imports again
(an environment with compiled bytecode starts faster); CPU is the child's user+system time.
The in-process row shows what ``list`` costs once started. Use a small ``--count`` on a
loaded machine.

    uv run python services/cli/bench/bench_dlq.py --count 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pacs.events.v1 import instance_events_pb2 as events_pb
from pacs.type.v1 import instance_pb2
from pacs_cli.dead_letters import kafka_settings, open_store
from pacs_common.events import cloudevent_headers, dead_letter_topic
from pacs_common.kafka_client import kafka_client_options
from pacs_common.local import infra_environment


def _pacs(*args: str) -> tuple[float, float]:
    """Wall and CPU seconds of one ``pacs dlq`` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(  # noqa: S603  (our own interpreter and module)
        [sys.executable, "-m", "pacs_cli", "dlq", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**infra_environment(), "PACS_AUDIT_EVENTS_TOPIC": f"bench.dlq-audit.{args[-1]}"},
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


async def _seed(count: int, group: str, topic: str) -> None:
    kafka = kafka_settings()
    admin = AIOKafkaAdminClient(**kafka_client_options(kafka))
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(topic, num_partitions=1, replication_factor=1),
                NewTopic(dead_letter_topic(group), num_partitions=1, replication_factor=1),
            ]
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(**kafka_client_options(kafka), acks="all")
    await producer.start()
    try:
        for n in range(count):
            ref = instance_pb2.InstanceRef(tenant="bench", study_instance_uid=f"1.2.3.{n}")
            event = events_pb.InstanceStored(object=instance_pb2.ObjectInfo(instance=ref))
            headers = [
                *cloudevent_headers(event, "bench"),
                ("dlq_error", b"InvalidArgumentError('bench')"),
                ("dlq_topic", topic.encode()),
                ("dlq_partition", b"0"),
                ("dlq_offset", str(n).encode()),
                ("dlq_group", group.encode()),
            ]
            await producer.send(
                dead_letter_topic(group),
                event.SerializeToString(),
                key=ref.study_instance_uid.encode(),
                headers=headers,
            )
        await producer.flush()
    finally:
        await producer.stop()


async def _store_list(group: str) -> tuple[float, float]:
    """What ``list`` does once the interpreter is up: connect, read markers and dead letters."""
    started, cpu = time.perf_counter(), time.process_time()
    async with open_store() as store:
        await store.dead_letters([group])
    return time.perf_counter() - started, time.process_time() - cpu


async def _bare_read(topic: str) -> tuple[float, float]:
    """Bare aiokafka: read ``topic`` from its beginning to its end."""
    started, cpu = time.perf_counter(), time.process_time()
    reader = AIOKafkaConsumer(**kafka_client_options(kafka_settings()), enable_auto_commit=False)
    await reader.start()
    try:
        tp = TopicPartition(topic, 0)
        reader.assign([tp])
        await reader.seek_to_beginning(tp)
        end = (await reader.end_offsets([tp]))[tp]
        while await reader.position(tp) < end:
            await reader.getmany(tp, timeout_ms=1000)
    finally:
        await reader.stop()
    return time.perf_counter() - started, time.process_time() - cpu


async def _bare_send(count: int, topic: str) -> tuple[float, float]:
    """Bare aiokafka: ``count`` records sent with acks=all, each awaited before the next (as a
    replay does: every dead letter is replayed, audited and marked before the next)."""
    started, cpu = time.perf_counter(), time.process_time()
    producer = AIOKafkaProducer(
        **kafka_client_options(kafka_settings()), acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for n in range(count):
            await producer.send_and_wait(topic, b"x" * 64, key=str(n).encode())
    finally:
        await producer.stop()
    return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    """Seed, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200, help="dead letters")
    count = parser.parse_args().count
    suffix = uuid.uuid4().hex[:10]
    group, topic = f"bench-dlq-{suffix}", f"bench.dlq-events.{suffix}.v1"
    os.environ.update({k: v for k, v in infra_environment().items() if k.startswith("PACS_")})
    asyncio.run(_seed(count, group, topic))

    rows = [
        ("pacs dlq list --group (process)", *_pacs("list", "--json", "--group", group)),
        ("list in-process (no interpreter start)", *asyncio.run(_store_list(group))),
        ("bare aiokafka: read the DLQ topic", *asyncio.run(_bare_read(dead_letter_topic(group)))),
        ("pacs dlq replay --all (process)", *_pacs("replay", "--all", "--group", group)),
        ("bare aiokafka: send N, acks=all, 1 by 1", *asyncio.run(_bare_send(count, topic))),
    ]
    load = os.getloadavg()[0]
    print(f"\n{count} dead letters, local single-broker Kafka (SASL_SSL), load average {load:.1f}")
    print(f"{'what':44} {'wall s':>8} {'items/s':>9} {'CPU ms/item':>12}")
    for name, wall, cpu in rows:
        print(f"{name:44} {wall:8.2f} {count / wall:9.0f} {cpu * 1000 / count:12.2f}")
    print(
        "replay does three acks=all round trips per dead letter (the event, its audit record, "
        "its marker); list reads the dead-letter topic and the marker topic once."
    )


if __name__ == "__main__":
    main()

"""Benchmark of the indexer's consumer end to end: how fast a backlog of ``InstanceStored``
events (each carrying its header) becomes queryable.

It publishes M events (CT_small.dcm's header with fresh UIDs, 10 instances per study, keyed by
study) to a fresh topic of three partitions (like ``pacs.instances.v1``) on the local Kafka,
then runs the indexer's own handler and consumer (:class:`pacs_indexer.consumer.IndexEventHandler`
on :class:`pacs_common.events.EventConsumer`, ``InstanceIndexed`` published to the real topic)
with a fresh group into a fresh index, and times from the consumer's start until every event is
indexed. ``serial`` is the consumer as it was before batching (one record, one transaction,
one publish, one commit at a time); ``batched`` is the indexer's configuration now. CPU is this
process's (user + system) during the consuming phase only, per instance; the broker's and the
database server's are not counted.

    uv run python services/indexer/bench/bench_consume.py [--events 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pacs.events.v1 import instance_events_pb2 as events_pb
from pacs.type.v1 import instance_pb2
from pacs_common.errors import UnavailableError
from pacs_common.events import EventConsumer, EventPublisher
from pacs_common.kafka_client import kafka_client_options
from pacs_common.local import infra_environment
from pacs_common.settings import KafkaSettings
from pacs_indexer.consumer import IndexEventHandler
from pacs_indexer.database import Database
from pacs_indexer.header import HeaderReader
from pacs_testkit.postgres import DEFAULT_URL, scratch_database
from pydicom import dcmread, dcmwrite
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from rich.console import Console
from rich.table import Table
from sqlalchemy import event

TENANT = "bench"
PARTITIONS = 3
PER_STUDY = 10


class _NoStorage(HeaderReader):
    """Every header travels in its event."""

    def __init__(self) -> None:
        pass

    async def read(self, instance: instance_pb2.InstanceRef, size: int) -> Dataset:
        raise UnavailableError("the benchmark has no storage")

    async def head(self, instance: instance_pb2.InstanceRef) -> instance_pb2.ObjectInfo:
        raise UnavailableError("the benchmark has no storage")


def events(count: int) -> list[events_pb.InstanceStored]:
    """``count`` InstanceStored events with CT_small's header under fresh UIDs."""
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    template = dcmread(path, stop_before_pixels=True)
    made = []
    for n in range(count):
        if n % PER_STUDY == 0:
            study, series = generate_uid(), generate_uid()
            template.PatientID = f"BENCH{n // PER_STUDY}"
        template.StudyInstanceUID, template.SeriesInstanceUID = study, series
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        buffer = io.BytesIO()
        dcmwrite(buffer, template, enforce_file_format=True)
        header = buffer.getvalue()
        ref = instance_pb2.InstanceRef(
            tenant=TENANT,
            study_instance_uid=study,
            series_instance_uid=series,
            sop_instance_uid=template.SOPInstanceUID,
            sop_class_uid=template.SOPClassUID,
            transfer_syntax_uid=template.file_meta.TransferSyntaxUID,
        )
        stored_time = f"2026-11-30T12:00:00.{n % 1000:03d}Z"
        made.append(
            events_pb.InstanceStored(
                object=instance_pb2.ObjectInfo(
                    instance=ref,
                    key=f"{TENANT}/{ref.sop_instance_uid}",
                    size=len(header),
                    stored_time=stored_time,
                ),
                header_part10=header,
            )
        )
    return made


async def publish(kafka: KafkaSettings, topic: str, batch: list[events_pb.InstanceStored]) -> None:
    admin = AIOKafkaAdminClient(**kafka_client_options(kafka))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()
    publisher = EventPublisher(kafka, source="bench")
    await publisher.start()
    try:
        for start in range(0, len(batch), 500):
            chunk = batch[start : start + 500]
            await publisher.publish_many(
                topic, [(e.object.instance.study_instance_uid, e) for e in chunk]
            )
    finally:
        await publisher.stop()


async def drop(kafka: KafkaSettings, topic: str) -> None:
    admin = AIOKafkaAdminClient(**kafka_client_options(kafka))
    await admin.start()
    try:
        with contextlib.suppress(Exception):  # a leftover topic harms nothing
            await admin.delete_topics([topic])
    finally:
        await admin.close()


async def consume(
    kafka: KafkaSettings, topic: str, database: Database, count: int, batched: bool
) -> tuple[float, float, int]:
    """Index the topic; returns (seconds, CPU seconds of this process, database commits),
    counted from the moment the group assigned the partitions."""
    publisher = EventPublisher(kafka, source="indexer")
    await publisher.start()
    handler = IndexEventHandler(database, _NoStorage(), publisher)
    consumer = EventConsumer(
        kafka,
        f"bench-consume-{uuid.uuid4().hex[:12]}",
        [topic],
        handler,
        publisher,
        batch_handler=handler.handle_batch if batched else None,
    )
    commits = [0]

    def committed(_conn: object) -> None:
        commits[0] += 1

    event.listen(database.engine, "commit", committed)
    process = psutil.Process(os.getpid())
    await consumer.start()
    try:
        # Time from the group's assignment: joining a group (about 3 s) is not indexing.
        while not consumer.assigned:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        cpu = process.cpu_times()
        started = time.perf_counter()
        # The consumer signals nothing when it is done; polling its counter costs nothing.
        while consumer.stats.handled < count:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        after = process.cpu_times()
    finally:
        await consumer.stop()
        await publisher.stop()
        event.remove(database.engine, "commit", committed)
    return elapsed, (after.user - cpu.user) + (after.system - cpu.system), commits[0]


async def run(backend: str, batched: bool, count: int, postgres_url: str) -> tuple[float, ...]:
    kafka = KafkaSettings()
    topic = f"bench.consume.{uuid.uuid4().hex[:12]}"
    await publish(kafka, topic, await asyncio.to_thread(events, count))
    try:
        with contextlib.ExitStack() as stack:
            if backend == "sqlite":
                folder = stack.enter_context(tempfile.TemporaryDirectory())
                url = f"sqlite:///{Path(folder) / 'index.sqlite'}"
            else:
                url = stack.enter_context(scratch_database(postgres_url, prefix="bench_consume"))
            database = Database(url)
            stack.callback(database.dispose)
            database.create_schema()
            elapsed, cpu, commits = await consume(kafka, topic, database, count, batched)
    finally:
        await drop(kafka, topic)
    return count / elapsed, 1000 * cpu / count, float(commits)


def main() -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--mode", choices=["serial", "batched", "both"], default="both")
    parser.add_argument(
        "--postgres-url",
        default=infra_environment().get("PACS_TEST_POSTGRES_URL", DEFAULT_URL),
    )
    args = parser.parse_args()
    os.environ.update(infra_environment())  # the local Kafka's endpoint and credentials
    console = Console()
    table = Table("backend", "consumer", "run", "instances/s", "CPU ms/instance", "commits")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    modes = ["serial", "batched"] if args.mode == "both" else [args.mode]
    for backend in backends:
        for mode in modes:
            for n in range(args.runs):
                rate, cpu, commits = asyncio.run(
                    run(backend, mode == "batched", args.events, args.postgres_url)
                )
                console.print(f"{backend} {mode} run {n + 1}: {rate:.0f}/s, {cpu:.2f} ms CPU")
                table.add_row(
                    backend, mode, str(n + 1), f"{rate:.0f}", f"{cpu:.2f}", f"{commits:.0f}"
                )
    console.print(table)


if __name__ == "__main__":
    main()

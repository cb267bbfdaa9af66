"""Benchmark of a restore: rebuilding the index of N stored instances from storage with the
``Reindex`` RPC (what ``pacs reindex`` calls), into an empty index.

It fills a fresh bucket of the local S3 server with N small synthetic Part 10 instances
(CT_small.dcm's header with 16x16 pixels under fresh UIDs, 10 instances per study), each PUT
straight to S3 in threads with the key, the SHA-256 checksum and the user metadata that storage
writes itself (:func:`pacs_storage.keys.object_key`, :func:`pacs_storage.versions.object_metadata`),
so the bucket holds what storage would hold after N C-STOREs, without N events. Then it starts a
real storage service over that bucket and a real indexer over an empty index (SQLite file or a
scratch PostgreSQL database), calls ``Reindex`` over gRPC with mutual TLS and an admin token
from the local hydra, and times it until the stream ends. Finally ``CheckIndex`` must report
nothing missing.

CPU is this process's (user + system: the storage and the indexer run in it) over the reindex
only, per instance; the S3 server's, Kafka's and PostgreSQL's are not counted. Peak RSS is the
process's high-water mark (it includes the fill phase).

    uv run python services/indexer/bench/bench_reindex.py --instances 2000
    uv run python services/indexer/bench/bench_reindex.py --instances 100000 --backend postgresql
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import io
import os
import resource
import secrets
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import grpc
from pacs.query.v1 import query_service_pb2 as pb
from pacs.query.v1 import query_service_pb2_grpc as pb_grpc
from pacs.type.v1 import instance_pb2
from pacs_common.auth import Role
from pacs_common.events import TOPIC_WORKFLOW
from pacs_common.local import client_tls, infra_environment
from pacs_common.s3 import make_s3_client
from pacs_common.settings import KafkaSettings, S3Settings
from pacs_indexer.app import create_app
from pacs_indexer.settings import IndexerSettings
from pacs_storage.keys import object_key
from pacs_storage.versions import new_version_id, object_metadata
from pacs_testkit.hydra import Hydra
from pacs_testkit.kafka import group_at_end_of_topic
from pacs_testkit.postgres import DEFAULT_URL, scratch_database
from pacs_testkit.storage import start_storage
from pydicom import dcmread
from pydicom.data import get_testdata_file
from rich.console import Console
from rich.table import Table

TENANT = "bench-reindex"
PER_STUDY = 10
THREADS = 16
# Placeholders of a fixed length: every instance is the template's bytes with these replaced
# by UIDs of the same length, so no element length changes (building each with pydicom would
# make the fill phase measure pydicom).
UID_LENGTH = 44
PLACEHOLDERS = {
    name: "2.25." + str(n) * (UID_LENGTH - 5)
    for n, name in enumerate(["study", "series", "sop"], start=1)
}


def template() -> tuple[bytes, str, str]:
    """CT_small's header with 16x16 pixels, UIDs as placeholders; its SOP class and syntax."""
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    dataset = dcmread(path)
    dataset.Rows = dataset.Columns = 16
    dataset.PixelData = bytes(16 * 16 * 2)
    dataset.StudyInstanceUID = PLACEHOLDERS["study"]
    dataset.SeriesInstanceUID = PLACEHOLDERS["series"]
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = PLACEHOLDERS["sop"]
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return (
        buffer.getvalue(),
        str(dataset.SOPClassUID),
        str(dataset.file_meta.TransferSyntaxUID),
    )


def uid(run: int, kind: int, n: int) -> str:
    """A valid UID of the fixed length (PS3.5 9.1: 2.25, then a 39-digit decimal without a
    leading zero): the run's 12 digits, the kind, the number."""
    return f"2.25.{run}{kind}{n:026d}"


def instances(count: int, run: int) -> Iterator[tuple[str, str, str]]:
    """(study, series, SOP instance) UIDs of ``count`` instances, ``PER_STUDY`` per study."""
    for n in range(count):
        study = uid(run, 1, n // PER_STUDY)
        yield study, uid(run, 2, n // PER_STUDY), uid(run, 3, n)


def fill(bucket: str, count: int, settings: S3Settings) -> float:
    """PUT ``count`` instances as storage would write them; returns the seconds it took."""
    data, sop_class, syntax = template()
    client = make_s3_client(settings)
    client.create_bucket(Bucket=bucket)
    run = secrets.randbelow(9 * 10**11) + 10**11

    def put(uids: tuple[str, str, str]) -> None:
        study, series, sop = uids
        body = (
            data.replace(PLACEHOLDERS["study"].encode(), study.encode())
            .replace(PLACEHOLDERS["series"].encode(), series.encode())
            .replace(PLACEHOLDERS["sop"].encode(), sop.encode())
        )
        digest = hashlib.sha256(body)
        ref = instance_pb2.InstanceRef(
            tenant=TENANT,
            study_instance_uid=study,
            series_instance_uid=series,
            sop_instance_uid=sop,
            sop_class_uid=sop_class,
            transfer_syntax_uid=syntax,
        )
        stored = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        client.put_object(
            Bucket=bucket,
            Key=object_key(ref),
            Body=body,
            ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
            Metadata=object_metadata(
                ref,
                digest.hexdigest(),
                new_version_id(datetime.now(UTC), digest.hexdigest()),
                stored,
            ),
            ContentType="application/dicom",
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        for _ in pool.map(put, instances(count, run), chunksize=64):
            pass
    return time.perf_counter() - started


async def reindex(bucket: str, database_url: str, hydra: Hydra) -> tuple[int, int, float, float]:
    """Run Reindex over the filled bucket; (processed, failed, seconds, CPU seconds)."""
    storage = await start_storage(bucket)
    group = f"bench-reindex-{uuid.uuid4().hex[:12]}"
    await group_at_end_of_topic(group, KafkaSettings())
    await group_at_end_of_topic(f"{group}-workflow", KafkaSettings(), TOPIC_WORKFLOW)
    indexer = create_app(
        IndexerSettings(
            grpc_port=0,
            database_url=database_url,
            storage_target=f"127.0.0.1:{storage.grpc_port}",
            consumer_group=group,
            workflow_consumer_group=f"{group}-workflow",
        )
    )
    await indexer.start()
    metadata = hydra.metadata(TENANT, [Role.ADMIN])
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{indexer.grpc_port}", client_tls().channel_credentials()
    )
    try:
        stub = pb_grpc.QueryServiceStub(channel)
        cpu = os.times()
        started = time.perf_counter()
        last = pb.ReindexResponse()
        async for progress in stub.Reindex(pb.ReindexRequest(tenant=TENANT), metadata=metadata):
            last = progress
        seconds = time.perf_counter() - started
        after = os.times()
        check = await stub.CheckIndex(pb.CheckIndexRequest(tenant=TENANT), metadata=metadata)
        if check.not_indexed_count or check.not_in_storage_count:
            raise SystemExit(f"index check after the reindex found differences: {check}")
        cpu_s = (after.user + after.system) - (cpu.user + cpu.system)
        return last.processed, last.failed, seconds, cpu_s
    finally:
        await channel.close()
        await indexer.stop()
        await storage.stop()


def empty_bucket(bucket: str, settings: S3Settings) -> None:
    """Delete every object of the benchmark's bucket, then the bucket."""
    client = make_s3_client(settings)
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=bucket)


@contextlib.contextmanager
def index_url(backend: str) -> Iterator[str]:
    """The URL of an empty index database: a SQLite file, or a scratch PostgreSQL database
    (dropped after)."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench-reindex-") as folder:
            yield f"sqlite:///{Path(folder) / 'index.sqlite'}"
        return
    with scratch_database(os.environ.get("PACS_TEST_POSTGRES_URL", DEFAULT_URL), "bench") as url:
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, nargs="+", default=[2000])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    for key, value in infra_environment().items():
        os.environ.setdefault(key, value)
    settings = S3Settings()
    hydra = Hydra(dict(os.environ))
    table = Table(title=f"Reindex from storage into an empty index ({args.backend})")
    for column in (
        "instances",
        "fill s",
        "reindex s",
        "instances/s",
        "CPU ms/instance",
        "failed",
        "peak RSS MiB",
    ):
        table.add_column(column, justify="right")
    for count in args.instances:
        bucket = f"bench-reindex-{uuid.uuid4().hex[:12]}"
        try:
            fill_s = fill(bucket, count, settings)
            with index_url(args.backend) as url:
                processed, failed, seconds, cpu_s = asyncio.run(reindex(bucket, url, hydra))
        finally:
            empty_bucket(bucket, settings)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        table.add_row(
            f"{processed:,}",
            f"{fill_s:.1f}",
            f"{seconds:.1f}",
            f"{processed / seconds:.0f}",
            f"{cpu_s * 1000 / max(processed, 1):.2f}",
            str(failed),
            f"{peak:.0f}",
        )
    Console(width=140).print(table)
    print(
        "One process runs storage and the indexer; CPU is theirs (not S3's, Kafka's or the "
        "database server's). Machine: 2 shared cores, loaded by other work."
    )


if __name__ == "__main__":
    main()

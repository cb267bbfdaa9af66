"""Benchmark of deletion: a study of N instances deleted through the indexer's deletion
(:func:`pacs_indexer.lifecycle.delete`: storage's ``Delete`` of every version per instance,
with its intent record and its ``InstanceDeleted`` acknowledged by Kafka, then the index rows),
side by side with the floor: the same number of objects removed from the S3 server with plain
boto3 ``DeleteObject`` calls (nothing recorded, announced or indexed).

Storage and the indexer run in this process (``pacs_testkit``) over the local S3 server and
Kafka (``make up``); the CPU column is this process's, so it holds storage's, the indexer's and
the client's work (the S3 server and Kafka are other processes).

    uv run python services/indexer/bench/bench_delete.py [--instances 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

import pydicom
from pacs.type.v1 import instance_pb2
from pacs_common.auth import Caller
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls, infra_environment
from pacs_common.s3 import make_s3_client
from pacs_common.settings import S3Settings
from pacs_indexer import lifecycle
from pacs_indexer.schema import Instance
from pacs_testkit.indexer import start_indexer
from pacs_testkit.storage import start_storage
from pydicom.uid import generate_uid
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

CT_SMALL = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
CALLER = Caller("bench", tenant=None, roles=frozenset(), trusted_service=True)


def instances(count: int, tenant: str) -> list[tuple[instance_pb2.InstanceRef, bytes]]:
    """``count`` instances of one new study (two series), CT_small with new UIDs."""
    study, series = generate_uid(), [generate_uid(), generate_uid()]
    made = []
    for n in range(count):
        ds = pydicom.dcmread(CT_SMALL)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series[n % 2]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        with tempfile.SpooledTemporaryFile() as buffer:
            ds.save_as(buffer)
            buffer.seek(0)
            data = buffer.read()
        made.append((instance_ref_of(data, tenant), data))
    return made


async def ours(count: int, folder: Path) -> tuple[float, float]:
    """Seconds and CPU seconds of deleting a study of ``count`` instances through the stack."""
    bucket, tenant = f"bench-{uuid.uuid4().hex[:12]}", "bench-delete"
    storage = await start_storage(bucket)
    indexer = await start_indexer(storage.grpc_port, folder / "index.sqlite")
    channel = open_channel(f"127.0.0.1:{storage.grpc_port}", client_tls())
    client = StorageClient(channel, timeout=60)
    try:
        made = instances(count, tenant)
        gate = asyncio.Semaphore(8)

        async def put(ref: instance_pb2.InstanceRef, data: bytes) -> None:
            async with gate:
                await client.put(ref, data)

        await asyncio.gather(*(put(ref, data) for ref, data in made))
        deadline = time.monotonic() + 300
        while await asyncio.to_thread(_indexed, indexer.database) < count:
            if time.monotonic() > deadline:
                raise SystemExit("instances not indexed within 5 minutes")
            await asyncio.sleep(0.2)
        target = lifecycle.Target(tenant, made[0][0].study_instance_uid)
        wall, cpu = time.perf_counter(), time.process_time()
        outcome = await lifecycle.delete(
            indexer.database, client, target, caller=CALLER, write_lock=indexer.admin.write_lock
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if outcome.instances != count:
            raise SystemExit(f"deleted {outcome.instances} of {count}")
        return wall, cpu
    finally:
        await channel.close()
        await indexer.stop()
        await storage.stop()


def _indexed(database: lifecycle.Database) -> int:
    with database.session() as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def plain_s3(count: int) -> tuple[float, float]:
    """Seconds and CPU seconds of ``count`` plain DeleteObject calls on the S3 server."""
    settings = S3Settings(bucket=f"bench-{uuid.uuid4().hex[:12]}")
    s3 = make_s3_client(settings)
    s3.create_bucket(Bucket=settings.bucket)
    data = CT_SMALL.read_bytes()
    keys = [f"bench/{n}.dcm" for n in range(count)]
    for key in keys:
        s3.put_object(Bucket=settings.bucket, Key=key, Body=data)
    wall, cpu = time.perf_counter(), time.process_time()
    for key in keys:
        s3.delete_object(Bucket=settings.bucket, Key=key)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    s3.delete_bucket(Bucket=settings.bucket)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=200)
    args = parser.parse_args()
    os.environ.update(infra_environment())  # the local Kafka's and S3's endpoints, credentials
    with tempfile.TemporaryDirectory(prefix="bench-delete-") as folder:
        ours_wall, ours_cpu = asyncio.run(ours(args.instances, Path(folder)))
    s3_wall, s3_cpu = plain_s3(args.instances)
    table = Table(title=f"deleting a study of {args.instances} instances (one run, loaded machine)")
    for column in ("path", "instances/s", "ms per instance", "CPU ms per instance (this process)"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for label, wall, cpu in (
        ("lifecycle.delete: storage Delete (every version) + index", ours_wall, ours_cpu),
        ("plain boto3 DeleteObject (no intent, event, index)", s3_wall, s3_cpu),
    ):
        n = args.instances
        table.add_row(label, f"{n / wall:,.0f}", f"{wall / n * 1000:.1f}", f"{cpu / n * 1000:.2f}")
    Console(width=130).print(table)


if __name__ == "__main__":
    main()

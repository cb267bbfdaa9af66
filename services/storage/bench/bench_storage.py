"""Throughput of Put and Get through StorageService versus plain boto3 on the same S3 server.

The service runs in this process (gRPC server on a free loopback port) and is driven by the
real client (:class:`pacs_storage.client.StorageClient`) over a real channel; boto3 talks to the
same S3 endpoint directly, with the same SHA-256 checksum on writes. A service Put also waits
for Kafka to acknowledge InstanceStored, which boto3 of course does not.

    uv run python services/storage/bench/bench_storage.py   (needs infra/up.sh)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from pacs.type.v1 import instance_pb2
from pacs_common.grpc_client import open_channel
from pacs_common.s3 import make_s3_client
from pacs_common.settings import KafkaSettings, S3Settings
from pacs_storage.app import create_app
from pacs_storage.client import StorageClient
from pacs_storage.settings import StorageSettings
from rich.console import Console
from rich.table import Table

MIB = 1024 * 1024
# (size, repetitions): keep the whole run well under three minutes.
CASES = [(MIB // 2, 30), (8 * MIB, 8), (256 * MIB, 2)]
REPO = Path(__file__).resolve().parents[3]


def load_infra_env() -> None:
    """Endpoints written by infra/up.sh, unless already in the environment."""
    path = REPO / ".cache" / "run" / "infra.env"
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.startswith("PACS_"):
                os.environ.setdefault(key.strip(), value.strip())


@dataclass
class Result:
    """Seconds per repetition of one operation."""

    seconds: list[float]

    def mb_per_s(self, size: int) -> float:
        best = sorted(self.seconds)[len(self.seconds) // 2]  # median
        return size / MIB / best


async def timed(reps: int, action: Callable[[int], Awaitable[None]]) -> Result:
    seconds = []
    for rep in range(reps):
        started = time.perf_counter()
        await action(rep)
        seconds.append(time.perf_counter() - started)
    return Result(seconds)


def ref(tenant: str, sop: str) -> instance_pb2.InstanceRef:
    return instance_pb2.InstanceRef(
        tenant=tenant,
        study_instance_uid="1.2.826.0.1.3680043.10.1",
        series_instance_uid="1.2.826.0.1.3680043.10.1.1",
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )


async def main() -> None:
    load_infra_env()
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    s3_settings = S3Settings(bucket=bucket)
    settings = StorageSettings(grpc_port=0, s3=s3_settings, kafka=KafkaSettings())
    app = create_app(settings)
    await app.start()
    if not app.announcer.ready:
        raise SystemExit("Kafka is not reachable: run infra/up.sh first")
    s3 = make_s3_client(s3_settings)
    channel = open_channel(f"127.0.0.1:{app.grpc_port}")
    client = StorageClient(channel, timeout=600)
    tenant = "bench"
    rows = []
    try:
        for size, reps in CASES:
            data = os.urandom(size)
            sha_b64 = base64.b64encode(hashlib.sha256(data).digest()).decode()
            label = f"{size / MIB:g} MiB"

            async def svc_put(rep: int, size: int = size, data: bytes = data) -> None:
                await client.put(ref(tenant, f"1.2.3.{size}.{rep}"), data)

            async def svc_get(rep: int, size: int = size) -> None:
                await client.get(ref(tenant, f"1.2.3.{size}.{rep}"))

            async def raw_put(
                rep: int, size: int = size, data: bytes = data, sha_b64: str = sha_b64
            ) -> None:
                await asyncio.to_thread(
                    s3.put_object,
                    Bucket=bucket,
                    Key=f"raw/{size}/{rep}",
                    Body=data,
                    ChecksumSHA256=sha_b64,
                )

            async def raw_get(rep: int, size: int = size) -> None:
                def read() -> bytes:
                    return s3.get_object(Bucket=bucket, Key=f"raw/{size}/{rep}")["Body"].read()

                await asyncio.to_thread(read)

            results = {
                "svc_put": await timed(reps, svc_put),
                "raw_put": await timed(reps, raw_put),
                "svc_get": await timed(reps, svc_get),
                "raw_get": await timed(reps, raw_get),
            }
            rows.append((label, reps, size, results))
    finally:
        await channel.close(None)
        await app.stop()
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)

    table = Table(title="StorageService vs plain boto3 (median MB/s, same S3 server)")
    for column in ("object", "reps", "op", "service MB/s", "boto3 MB/s", "service/boto3"):
        table.add_column(column, justify="right")
    for label, reps, size, results in rows:
        for op in ("put", "get"):
            svc = results[f"svc_{op}"].mb_per_s(size)
            raw = results[f"raw_{op}"].mb_per_s(size)
            table.add_row(label, str(reps), op, f"{svc:.1f}", f"{raw:.1f}", f"{svc / raw:.2f}")
    Console().print(table)


if __name__ == "__main__":
    asyncio.run(main())

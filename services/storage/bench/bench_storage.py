"""Throughput of Put and Get through StorageService, and of writes and reads through its
grants (bytes straight to S3, storage signs and commits), versus plain boto3 on the same S3
server.

The service runs as its own process (``python -m pacs_storage``, as deployed: client and server
do not share a GIL or an event loop) and is driven by the real client
(:class:`pacs_common.clients.storage.StorageClient`) over a real channel. boto3 talks to the same S3
endpoint directly and does the same integrity work the service must do, so the comparison is
fair: a Put computes the SHA-256 and sends it as ``ChecksumSHA256`` (S3 verifies it), a Get
reads the whole body and hashes it. A service Put also waits for Kafka to acknowledge
InstanceStored, which boto3 of course does not; so does a granted write (GrantWrite, the PUT
or parts, CommitWrite), through :class:`pacs_common.clients.direct.DirectStorage` as the
gateway uses it. A granted read is GrantRead plus the GET, hashed as it arrives.

A third column moves the same bytes through the same client and server set-up with nothing
behind it (``transport_only.py``): the cost of the gRPC hop alone. Where that alone takes as
long as boto3's whole transfer (large Gets), no S3 tuning can bring the service near boto3.

Service, boto3 and transport-only repetitions alternate, so all three see the same background
load (the development VM is small and shared); the table shows medians.

    uv run python services/storage/bench/bench_storage.py [--rounds N] [--json FILE]
    (needs infra/up.sh)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pacs.type.v1 import instance_pb2
from pacs_common.clients.direct import DirectStorage
from pacs_common.clients.storage import StorageClient
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls, ensure_local_pki, free_port, infra_environment
from pacs_common.s3 import make_s3_client
from pacs_common.settings import S3Settings
from pacs_testkit.channels import plain_aio_channel
from rich.console import Console
from rich.table import Table

MIB = 1024 * 1024
# (size, repetitions per round): one round stays well under two minutes.
CASES = [(MIB // 2, 30), (8 * MIB, 8), (256 * MIB, 2)]


TRANSPORT_ONLY = Path(__file__).with_name("transport_only.py")


async def wait_serving(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    async with plain_aio_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(service="pacs.storage.v1.StorageService"),
                    timeout=1,
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("the storage service did not become ready (is infra/up.sh running?)")


async def timed(action: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


def ref(tenant: str, sop: str) -> instance_pb2.InstanceRef:
    return instance_pb2.InstanceRef(
        tenant=tenant,
        study_instance_uid="1.2.826.0.1.3680043.10.1",
        series_instance_uid="1.2.826.0.1.3680043.10.1.1",
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )


@dataclass
class Contenders:
    """The ways to move one object: the service, its grants, the bare gRPC hop, boto3."""

    client: StorageClient
    hop: StorageClient
    direct: DirectStorage
    s3: Any
    bucket: str

    def actions(self, sop: str, data: bytes) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        """Each way's write then read of ``data``, interleaved so all see the same load."""
        size = len(data)
        raw_key = f"raw/{sop}"

        async def svc_put() -> None:
            await self.client.put(ref("bench", sop), data)

        async def svc_get() -> None:
            assert len(await self.client.get(ref("bench", sop))) == size

        async def hop_put() -> None:
            await self.hop.put(ref("bench", sop), data)

        async def hop_get() -> None:
            assert len(await self.hop.get(ref("bench", sop))) == size

        async def grant_put() -> None:
            await self.direct.put(ref("bench", "9." + sop), data)

        async def grant_get() -> None:
            assert len(await self.direct.get(ref("bench", "9." + sop))) == size

        async def raw_put() -> None:
            digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
            self.s3.put_object(Bucket=self.bucket, Key=raw_key, Body=data, ChecksumSHA256=digest)

        async def raw_get() -> None:
            body = self.s3.get_object(Bucket=self.bucket, Key=raw_key)["Body"].read()
            hashlib.sha256(body).hexdigest()
            assert len(body) == size

        return [
            ("svc_put", svc_put),
            ("raw_put", raw_put),
            ("grant_put", grant_put),
            ("hop_put", hop_put),
            ("svc_get", svc_get),
            ("raw_get", raw_get),
            ("grant_get", grant_get),
            ("hop_get", hop_get),
        ]


async def main(rounds: int) -> list[dict[str, object]]:
    ensure_local_pki()  # the services and this client speak mutual TLS
    env = infra_environment()
    port = free_port()
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    env.update({"PACS_STORAGE_GRPC_PORT": str(port), "PACS_S3_BUCKET": bucket})
    s3 = make_s3_client(
        S3Settings(endpoint=env.get("PACS_S3_ENDPOINT", "http://127.0.0.1:17070"), bucket=bucket)
    )
    # A benchmark script: starting the one child before any await is fine (ASYNC220).
    service = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "pacs_storage"], env=env, stderr=subprocess.DEVNULL
    )
    hop_port = free_port()
    transport_only = subprocess.Popen(  # noqa: ASYNC220, S603  (our own script)
        [sys.executable, str(TRANSPORT_ONLY), str(hop_port)], env=env, stderr=subprocess.DEVNULL
    )
    seconds: dict[tuple[int, str], list[float]] = {}
    try:
        await wait_serving(port)
        await wait_serving(hop_port)
        channel = open_channel(f"127.0.0.1:{port}", client_tls())
        client = StorageClient(channel, timeout=600)
        hop_channel = open_channel(f"127.0.0.1:{hop_port}", client_tls())
        hop = StorageClient(hop_channel, timeout=600)
        direct = DirectStorage(client)
        contenders = Contenders(client, hop, direct, s3, bucket)
        for round_no in range(rounds):
            for size, reps in CASES:
                data = os.urandom(size)
                for rep in range(reps):
                    sop = f"1.2.3.{round_no}.{size}.{rep}"
                    for name, action in contenders.actions(sop, data):
                        seconds.setdefault((size, name), []).append(await timed(action))
        await channel.close(None)
        await hop_channel.close(None)
    finally:
        for process in (service, transport_only):
            process.terminate()
            process.wait(30)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)

    return summarise(seconds)


def summarise(seconds: dict[tuple[int, str], list[float]]) -> list[dict[str, object]]:
    """Print the table of medians and return them."""
    table = Table(
        title="StorageService (own process) vs plain boto3, median MB/s, same S3 server;"
        " 'gRPC hop alone' is the same client and server set-up moving the bytes with no S3"
    )
    for column in (
        "object",
        "runs",
        "op",
        "service MB/s",
        "grants MB/s",
        "boto3 MB/s",
        "gRPC hop alone MB/s",
        "grants MB/s / boto3",
        "service time/boto3",
        "hop alone time/boto3",
    ):
        table.add_column(column, justify="right")
    summary: list[dict[str, object]] = []
    for size, _ in CASES:
        for op in ("put", "get"):
            svc = statistics.median(seconds[(size, f"svc_{op}")])
            raw = statistics.median(seconds[(size, f"raw_{op}")])
            alone = statistics.median(seconds[(size, f"hop_{op}")])
            grant = statistics.median(seconds[(size, f"grant_{op}")])
            runs = len(seconds[(size, f"svc_{op}")])
            table.add_row(
                f"{size / MIB:g} MiB",
                str(runs),
                op,
                f"{size / MIB / svc:.1f}",
                f"{size / MIB / grant:.1f}",
                f"{size / MIB / raw:.1f}",
                f"{size / MIB / alone:.1f}",
                f"{raw / grant:.2f}",
                f"{svc / raw:.2f}",
                f"{alone / raw:.2f}",
            )
            summary.append(
                {
                    "size": size,
                    "op": op,
                    "service_s": svc,
                    "grants_s": grant,
                    "boto3_s": raw,
                    "hop_alone_s": alone,
                }
            )
    Console(width=max(Console().width, 130)).print(table)
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="repeat all cases this often")
    parser.add_argument("--json", help="also write the medians to this file")
    args = parser.parse_args()
    medians = asyncio.run(main(args.rounds))
    if args.json:
        Path(args.json).write_text(json.dumps(medians, indent=1))

"""Peak memory of the storage service while a 2 GiB object goes through Put and Get.

The service runs as its own process (``python -m pacs_storage``) so that its resident set is
measured alone: ``VmRSS`` after start, then ``VmHWM`` (peak resident set, Linux) after the Put
and after the Get. The client generates the object on the fly and hashes what comes back, so
neither side ever holds it whole.

    uv run python services/storage/bench/bench_memory.py [size_mib]   (needs infra/up.sh)
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from bench_storage import wait_serving
from pacs.type.v1 import instance_pb2
from pacs_common.clients.storage import StorageClient
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls, ensure_local_pki, free_port, infra_environment
from pacs_common.s3 import make_s3_client
from pacs_common.settings import S3Settings
from rich.console import Console
from rich.table import Table

MIB = 1024 * 1024


def memory_of(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in {"VmRSS", "VmHWM"}:
            values[name] = int(rest.split()[0]) // 1024
    return values


async def generated(size: int, digest: hashlib._Hash) -> AsyncIterator[bytes]:
    """``size`` bytes in 1 MiB chunks, each different, hashed as they are produced."""
    block = os.urandom(MIB)
    sent = 0
    counter = 0
    while sent < size:
        chunk = counter.to_bytes(8, "big") + block[8 : min(MIB, size - sent)]
        digest.update(chunk)
        sent += len(chunk)
        counter += 1
        yield chunk


async def main(size: int) -> None:
    ensure_local_pki()  # the services and this client speak mutual TLS
    env = infra_environment()
    port = free_port()
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    env.update({"PACS_STORAGE_GRPC_PORT": str(port), "PACS_S3_BUCKET": bucket})
    # A benchmark script: starting the one child before any await is fine (ASYNC220).
    service = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "pacs_storage"], env=env, stderr=subprocess.DEVNULL
    )
    rows: list[tuple[str, str, str, str]] = []
    try:
        await wait_serving(port)
        started = memory_of(service.pid)
        rows.append(("after start", f"{started['VmRSS']}", f"{started['VmHWM']}", ""))
        ref = instance_pb2.InstanceRef(
            tenant="bench",
            study_instance_uid="1.2.826.0.1.3680043.10.2",
            series_instance_uid="1.2.826.0.1.3680043.10.2.1",
            sop_instance_uid="1.2.826.0.1.3680043.10.2.1.1",
        )
        channel = open_channel(f"127.0.0.1:{port}", client_tls())
        client = StorageClient(channel, timeout=1800)
        sent = hashlib.sha256()
        t0 = time.perf_counter()
        response = await client.put(ref, generated(size, sent), size_hint=size)
        put_s = time.perf_counter() - t0
        assert response.object.sha256 == sent.hexdigest()
        after_put = memory_of(service.pid)
        rows.append(
            (
                f"Put {size // MIB} MiB (streamed)",
                f"{after_put['VmRSS']}",
                f"{after_put['VmHWM']}",
                f"{size / MIB / put_s:.0f} MB/s",
            )
        )
        back = hashlib.sha256()
        t0 = time.perf_counter()
        async for chunk in client.get_stream(ref):
            back.update(chunk)
        get_s = time.perf_counter() - t0
        assert back.hexdigest() == sent.hexdigest()
        after_get = memory_of(service.pid)
        rows.append(
            (
                f"Get {size // MIB} MiB (verified)",
                f"{after_get['VmRSS']}",
                f"{after_get['VmHWM']}",
                f"{size / MIB / get_s:.0f} MB/s",
            )
        )
        await channel.close(None)
    finally:
        service.terminate()
        service.wait(30)
        endpoint = env.get("PACS_S3_ENDPOINT", "http://127.0.0.1:17070")
        s3 = make_s3_client(S3Settings(endpoint=endpoint, bucket=bucket))
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)

    table = Table(title=f"storage service memory, {size // MIB} MiB object (MiB)")
    for column in ("phase", "VmRSS", "peak (VmHWM)", "throughput"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) * MIB if len(sys.argv) > 1 else 2048 * MIB))

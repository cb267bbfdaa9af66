"""Routing throughput: how fast a destination's queue drains, next to DCMTK ``storescu`` sending
the same files to the same DCMTK ``storescp``.

1. ``--instances`` CT instances (pydicom's CT_small, 39 KB, fresh UIDs) are stored through the
   real storage service on the local S3 and Kafka; the router (in this process) enqueues them
   on its destination's topic while the destination is down.
2. ``storescp`` starts; the time from the first instance accepted to the last, scaled to all
   of them, is the **drain** (the sender may be in its retry back-off when storescp starts):
   per instance the sender reads the object from S3 through a storage read grant, sends one
   C-STORE on the association it keeps open, and commits the offset (one at a time, in order).
3. The peer: ``storescu`` sends the same files to a fresh ``storescp``, one association for all
   (``storescu`` with every file on the command line, what the router does for one study), and
   one association per file (a loop).

CPU-ms per instance is this process's CPU time during the drain (the router and the in-process
storage service, which only signs read grants) divided by the instances; storescu's is its own
user+system time. What bounds the router is, per instance and one after the other (the queue
is drained in order, never in parallel): a read grant from storage, the S3 GET, a Kafka commit,
and the C-STORE round trip.

    uv run python services/router/bench/bench_route.py [--instances N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from io import BytesIO
from pathlib import Path

import pydicom
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls, ensure_local_pki, infra_environment
from pacs_common.settings import KafkaSettings
from pacs_router.app import create_app
from pacs_router.settings import RouterSettings
from pacs_testkit.kafka import group_at_end_of_topic
from pacs_testkit.storage import start_storage
from pydicom.uid import generate_uid
from rich.console import Console
from rich.table import Table

STORESCP = "/usr/bin/storescp"
STORESCU = "/usr/bin/storescu"
CT = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _instances(count: int) -> list[bytes]:
    study = generate_uid()
    out = []
    for _ in range(count):
        dataset = pydicom.dcmread(CT)
        dataset.StudyInstanceUID = study
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        buffer = BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def _storescp(port: int, folder: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(  # noqa: S603  (the installed DCMTK)
        [STORESCP, "+xa", "+B", "-aet", "REMOTE", "-od", str(folder), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(20)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _router_drain(parts: list[bytes], work: Path) -> tuple[float, float]:
    """Seconds to drain the queue and CPU-ms per instance."""
    tenant = f"bench{uuid.uuid4().hex[:8]}"
    bucket = f"bench-route-{uuid.uuid4().hex[:12]}"
    storage = await start_storage(bucket)
    port = _free_port()
    folder = work / "router"
    folder.mkdir()
    run = uuid.uuid4().hex[:8]
    rules = work / "routes.json"
    rules.write_text(
        json.dumps(
            {
                "destinations": {
                    "bench": {
                        "kind": "dimse",
                        "host": "127.0.0.1",
                        "port": port,
                        "ae_title": "REMOTE",
                    }
                },
                "tenants": {tenant: [{"name": "all", "destinations": ["bench"]}]},
            }
        )
    )
    group = f"bench-router-{run}"
    await group_at_end_of_topic(group, KafkaSettings())
    router = create_app(
        RouterSettings(
            grpc_port=0,
            rules_file=rules,
            storage_target=f"127.0.0.1:{storage.grpc_port}",
            consumer_group=group,
            sender_group_prefix=f"{group}-send-",
            topic_prefix=f"bench.route.{run}.",
            shutdown_grace_s=2,
        )
    )
    await router.start()
    channel = open_channel(f"127.0.0.1:{storage.grpc_port}", client_tls("gateway"))
    client = StorageClient(channel, timeout=60)
    try:
        for part10 in parts:
            await client.put(instance_ref_of(part10, tenant), part10)
        while await router.servicer.queued("bench") < len(parts):  # noqa: ASYNC110  (polls Kafka)
            await asyncio.sleep(0.2)
        scp = _storescp(port, folder)
        state = router.senders["bench"].state
        # From the first instance accepted: the sender may be in its retry back-off (up to
        # 10 s) when storescp comes up, which is not sending time.
        while state.sent < 1:  # noqa: ASYNC110  (polls a counter the sender updates)
            await asyncio.sleep(0.005)
        cpu, started = _cpu(), time.perf_counter()
        while state.sent < len(parts):  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        seconds = (time.perf_counter() - started) * len(parts) / (len(parts) - 1)
        cpu_ms = (_cpu() - cpu) * 1000 / (len(parts) - 1)
        _stop(scp)
    finally:
        await channel.close()
        await router.stop()
        await storage.stop()
    return seconds, cpu_ms


def _storescu(parts: list[bytes], work: Path, one_association: bool) -> tuple[float, float]:
    files = work / ("files-one" if one_association else "files-each")
    files.mkdir()
    paths = []
    for index, part10 in enumerate(parts):
        path = files / f"{index:06d}.dcm"
        path.write_bytes(part10)
        paths.append(str(path))
    port = _free_port()
    out = work / ("scp-one" if one_association else "scp-each")
    out.mkdir()
    scp = _storescp(port, out)
    cpu, started = _children_cpu(), time.perf_counter()
    batches = [paths] if one_association else [[p] for p in paths]
    for batch in batches:
        subprocess.run(  # noqa: S603
            [STORESCU, "-aec", "REMOTE", "127.0.0.1", str(port), *batch],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    seconds = time.perf_counter() - started
    cpu_ms = (_children_cpu() - cpu) * 1000 / len(parts)
    _stop(scp)
    return seconds, cpu_ms


def main() -> None:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=200, help="at least 2")
    args = parser.parse_args()
    ensure_local_pki()
    for key, value in infra_environment().items():
        os.environ.setdefault(key, value)
    parts = _instances(args.instances)
    work = Path(tempfile.mkdtemp(prefix="bench-route-"))
    try:
        rows = [
            ("router drain (grant + S3 read + C-STORE + commit)", *asyncio.run(
                _router_drain(parts, work)
            )),
            ("storescu, 1 association per file", *_storescu(parts, work, False)),
            ("storescu, 1 association for all", *_storescu(parts, work, True)),
        ]  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = Table(title=f"{args.instances} x CT_small (39 KB) to DCMTK storescp on loopback")
    for column in ("sender", "seconds", "instances/s", "CPU-ms/instance"):
        table.add_column(column, justify="left" if column == "sender" else "right")
    for name, seconds, cpu_ms in rows:
        table.add_row(name, f"{seconds:.2f}", f"{args.instances / seconds:.1f}", f"{cpu_ms:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()

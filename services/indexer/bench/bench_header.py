"""Benchmark of where the indexer gets an instance's header: from ``InstanceStored``
(``header_part10``) or read back through the storage service, and what turning it into DICOM
JSON costs.

For pydicom's CT_small.dcm and a 512 KiB synthetic CT slice (CT_small's header, 512x512 16-bit
pixels), it times, per instance:

* storage's new work per Put: cutting the header from the first bytes
  (:func:`pacs_storage.event_header.event_header`);
* pydicom ``dcmread(stop_before_pixels)`` + ``to_json_dict`` (the DICOM JSON the index stores),
  i.e. what storage would pay if the event carried DICOM JSON instead of bytes;
* the indexer's header work before this change: a ranged ``StorageService.Get`` through a real
  storage service (its own process, mutual TLS, the S3 server of ``make up``) and the parse,
  then :func:`pacs_indexer.records.record_from_dataset`; the CPU of this process (the indexer's
  share) and of the storage process are measured apart;
* the same with the header taken from the event (no Get).

The database upsert is the same either way and is left out.

    uv run python services/indexer/bench/bench_header.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import psutil
from pacs.type.v1 import instance_pb2
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of, to_dicom_json
from pacs_common.errors import NotFoundError, PacsError
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls, ensure_local_pki, free_port, infra_environment
from pacs_indexer.header import HeaderReader, parse_event_header
from pacs_indexer.records import StoredObject, record_from_dataset
from pacs_storage.event_header import event_header, prefix_to_keep
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from rich.console import Console
from rich.table import Table

CAP = 256 * 1024
console = Console()


def ct_small() -> bytes:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    return Path(path).read_bytes()


def ct_512k() -> bytes:
    """CT_small's header with 512x512 signed 16-bit pixels (about 512 KiB), like the ingest
    bench's slices."""
    dataset = dcmread(io.BytesIO(ct_small()))
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.Rows = dataset.Columns = 512
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    dataset.PixelRepresentation = 1
    rng = np.random.default_rng(20261130)
    dataset.PixelData = rng.integers(-1000, 2000, size=(512, 512), dtype=np.int16).tobytes()
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def per_call_ms(function: Callable[[], object], rounds: int) -> float:
    function()
    started = time.process_time()
    for _ in range(rounds):
        function()
    return (time.process_time() - started) / rounds * 1000


async def per_call_cpu_ms(
    function: Callable[[], Awaitable[object]], rounds: int, storage: psutil.Process
) -> tuple[float, float, float]:
    """(this process CPU ms, storage process CPU ms, wall ms) per call."""
    await function()
    before = storage.cpu_times()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        await function()
    own = (time.process_time() - cpu) / rounds * 1000
    wall_ms = (time.perf_counter() - wall) / rounds * 1000
    after = storage.cpu_times()
    spent = (after.user - before.user) + (after.system - before.system)
    return own, spent / rounds * 1000, wall_ms


def stored(ref: instance_pb2.InstanceRef, size: int) -> StoredObject:
    return StoredObject(
        key="bench",
        size=size,
        sha256="",
        version_id="",
        stored_time="2026-11-30T00:00:00Z",
        transfer_syntax_uid=ref.transfer_syntax_uid,
    )


async def wait_ready(client: StorageClient, ref: instance_pb2.InstanceRef) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            await client.head(ref)
            return
        except NotFoundError:
            return
        except PacsError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def main(rounds: int) -> None:
    ensure_local_pki()
    env = infra_environment()
    port = free_port()
    env.update(
        {"PACS_STORAGE_GRPC_PORT": str(port), "PACS_S3_BUCKET": f"bench-{uuid.uuid4().hex[:12]}"}
    )
    # A benchmark script: starting the one child before any await is fine (ASYNC220).
    service = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "pacs_storage"], env=env, stderr=subprocess.DEVNULL
    )
    table = Table(title=f"the header of one instance: ms per instance, {rounds} rounds")
    for column in (
        "object",
        "header B (event)",
        "as DICOM JSON B",
        "storage: cut header",
        "(a) dcmread + to_json_dict",
        "(b) Get: indexer CPU",
        "(b) Get: storage CPU",
        "(b) wall",
        "(c) event: indexer CPU",
        "(c) wall",
    ):
        table.add_column(column, justify="left" if column == "object" else "right")
    try:
        channel = open_channel(f"127.0.0.1:{port}", client_tls())
        client = StorageClient(channel, timeout=60)
        reader = HeaderReader(client)
        storage = psutil.Process(service.pid)
        for name, data in (("CT_small.dcm", ct_small()), ("CT 512 KiB", ct_512k())):
            ref = instance_ref_of(data, "bench")
            await wait_ready(client, ref)
            await client.put(ref, data)
            header = event_header(data[: prefix_to_keep(CAP)], len(data), CAP)
            dataset = parse_event_header(header)
            json_bytes = len(json.dumps(to_dicom_json(dataset), separators=(",", ":")))

            def cut(data: bytes = data) -> bytes:
                return event_header(data[: prefix_to_keep(CAP)], len(data), CAP)

            def parse_and_json(header: bytes = header) -> object:
                return to_dicom_json(dcmread(io.BytesIO(header), stop_before_pixels=True))

            def from_event(header: bytes = header, ref: instance_pb2.InstanceRef = ref) -> object:
                return record_from_dataset("bench", parse_event_header(header), stored(ref, 0))

            async def through_storage(
                ref: instance_pb2.InstanceRef = ref, size: int = len(data)
            ) -> object:
                return record_from_dataset("bench", await reader.read(ref, size), stored(ref, 0))

            async def event_path(from_event: Callable[[], object] = from_event) -> object:
                return from_event()

            before = await per_call_cpu_ms(through_storage, rounds, storage)
            after = await per_call_cpu_ms(event_path, rounds, storage)
            table.add_row(
                f"{name} ({len(data) // 1024} KiB)",
                str(len(header)),
                str(json_bytes),
                f"{per_call_ms(cut, rounds):.2f}",
                f"{per_call_ms(parse_and_json, rounds):.2f}",
                *(f"{value:.2f}" for value in before),
                f"{after[0]:.2f}",
                f"{after[2]:.2f}",
            )
        await channel.close()
    finally:
        service.terminate()
        service.wait(10)
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    asyncio.run(main(parser.parse_args().rounds))

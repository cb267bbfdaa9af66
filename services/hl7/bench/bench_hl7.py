"""Benchmark of the hl7 service and the worklist, end to end on this machine.

1. **HL7 messages/s, ACK after durable**: the hl7 service runs as its own process
   (``python -m pacs_hl7``) on the Kafka of ``make up``; ``--connections`` MLLP clients
   (python-hl7's asyncio client) each send ``--messages`` ORM^O01 one after the other, waiting
   for each ACK (original mode) — every ACK is sent only after Kafka acknowledged the events
   with ``acks=all``. Side by side, the same load against a python-hl7 MLLP server that parses
   and answers AA without publishing anything: the bound of MLLP + parsing in Python, i.e. what
   the durable publish costs on top. CPU per message is the server process's user+system time.
2. **Worklist C-FIND p50 at ``--steps`` scheduled steps**: steps spread over 100 stations and
   10 days are written into a SQLite index, an indexer (no consumers) and a gateway run
   in-process, and pynetdicom's SCU asks (one association) for one station's day — the query a
   modality makes — ``--queries`` times.

    uv run python services/hl7/bench/bench_hl7.py [--messages 500] [--connections 8] [--steps 10000]

The machine is shared (2 cores for many agents when this was written): figures are lower
bounds of what the code can do, and vary run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from hl7.mllp import open_hl7_connection
from pacs.events.v1 import workflow_events_pb2 as pb
from pacs_common.local import ensure_local_pki, free_port, infra_environment
from pydicom.dataset import Dataset
from pynetdicom import AE
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "services" / "hl7" / "tests"))
from hl7_helpers import orm  # noqa: E402  (the tests' message builder)

PEER_SERVER = """
import asyncio, sys
import hl7
from hl7.mllp import start_hl7_server

async def client(reader, writer):
    try:
        while True:
            message = await reader.readmessage()
            writer.writemessage(message.create_ack("AA"))
            await writer.drain()
    except asyncio.IncompleteReadError:
        writer.close()

async def main():
    server = await start_hl7_server(client, host="127.0.0.1", port=int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


async def _wait_port(port: int, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _client(port: int, count: int, acks: list[str]) -> None:
    reader, writer = await open_hl7_connection("127.0.0.1", port, encoding="utf-8")
    try:
        for _ in range(count):
            writer.writemessage(orm(f"P{uuid.uuid4().hex[:6]}", uuid.uuid4().hex[:10]))
            await writer.drain()
            ack = await reader.readmessage()
            acks.append(str(ack.segment("MSA")(1)))
    finally:
        writer.close()


async def _load(port: int, connections: int, messages: int) -> tuple[float, list[str]]:
    acks: list[str] = []
    started = time.perf_counter()
    await asyncio.gather(
        *(_client(port, messages // connections, acks) for _ in range(connections))
    )
    return time.perf_counter() - started, acks


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def bench_messages(messages: int, connections: int) -> list[tuple[str, str, str, str, str]]:
    """(server, messages, msg/s, CPU ms/msg, bound) rows."""
    env = {**os.environ, **infra_environment(), "PACS_TLS_DIR": str(ensure_local_pki())}
    rows = []
    for name, command, bound in (
        (
            "hl7 service (ACK after Kafka acks=all)",
            [sys.executable, "-m", "pacs_hl7"],
            "Kafka round trip per message; one message in flight per connection",
        ),
        (
            "python-hl7 MLLP server, AA only (peer)",
            [sys.executable, "-c", PEER_SERVER],
            "MLLP framing + hl7.parse in Python, nothing durable",
        ),
    ):
        port = free_port()
        env_run = {
            **env,
            "PACS_HL7_MLLP_PORT": str(port),
            "PACS_HL7_GRPC_PORT": str(free_port()),
            "PACS_HL7_DEFAULT_TENANT": f"bench{uuid.uuid4().hex[:8]}",
            "PACS_HL7_LOG_LEVEL": "WARNING",
        }
        # the bench starts its own interpreter with fixed arguments; Popen (not asyncio) so that
        # psutil can read the server process CPU while the load runs
        server = subprocess.Popen(  # noqa: ASYNC220, S603
            [*command, str(port)], env=env_run, stdout=subprocess.DEVNULL
        )
        try:
            await _wait_port(port)
            await _load(port, connections, connections * 5)  # warm-up
            process = psutil.Process(server.pid)
            before = _cpu(process)
            elapsed, acks = await _load(port, connections, messages)
            cpu = _cpu(process) - before
            assert set(acks) == {"AA"}, set(acks)
            rows.append(
                (
                    name,
                    str(len(acks)),
                    f"{len(acks) / elapsed:.0f}",
                    f"{cpu / len(acks) * 1000:.2f}",
                    bound,
                )
            )
        finally:
            server.terminate()
            server.wait(30)
    return rows


def _fill(database_url: str, tenant: str, steps: int) -> None:
    from pacs_indexer.database import Database  # noqa: PLC0415
    from pacs_indexer.worklist import schedule  # noqa: PLC0415

    database = Database(database_url)
    database.create_schema()
    with database.session() as session:
        for n in range(steps):
            schedule(
                session,
                tenant,
                pb.Patient(patient_id=f"P{n}", patient_name=f"DOE^N{n}"),
                pb.ScheduledStep(
                    order_number=f"O{n}",
                    step_id=f"S{n}",
                    accession_number=f"A{n}",
                    modality="CT",
                    station_ae_title=f"ST{n % 100:03d}",
                    start_date=f"202612{1 + (n // 100) % 10:02d}",
                    start_time=f"{8 + n % 10:02d}0000",
                ),
            )
    database.refresh_statistics()
    database.dispose()


def _c_find(port: int, queries: int, days: int) -> list[float]:
    ae = AE(ae_title="ST007")
    ae.add_requested_context("1.2.840.10008.5.1.4.31")
    assoc = ae.associate("127.0.0.1", port, ae_title="CLOUDPACS")
    assert assoc.is_established
    times = []
    try:
        for n in range(queries):
            query = Dataset()
            query.PatientName = ""
            query.PatientID = ""
            query.AccessionNumber = ""
            step = Dataset()
            step.ScheduledStationAETitle = "ST007"
            step.ScheduledProcedureStepStartDate = f"202612{1 + n % days:02d}"
            step.ScheduledProcedureStepStartTime = ""
            step.Modality = "CT"
            query.ScheduledProcedureStepSequence = [step]
            started = time.perf_counter()
            matches = [
                s
                for s, _ in assoc.send_c_find(query, "1.2.840.10008.5.1.4.31")
                if s and s.Status == 0xFF00
            ]
            times.append(time.perf_counter() - started)
            assert matches, "no worklist item found"
    finally:
        assoc.release()
    return times


async def bench_worklist(steps: int, queries: int) -> tuple[str, ...]:
    from pacs_common.auth import AuthSettings  # noqa: PLC0415
    from pacs_gateway.app import create_app as create_gateway  # noqa: PLC0415
    from pacs_gateway.settings import GatewaySettings  # noqa: PLC0415
    from pacs_indexer.app import create_app as create_indexer  # noqa: PLC0415
    from pacs_indexer.settings import IndexerSettings  # noqa: PLC0415

    tenant = f"bench{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/index.sqlite"
        started = time.perf_counter()
        await asyncio.to_thread(_fill, url, tenant, steps)
        fill_s = time.perf_counter() - started
        indexer = create_indexer(
            IndexerSettings(
                grpc_port=0,
                database_url=url,
                consume_events=False,
                auth=AuthSettings(trusted_services={"gateway", "cli"}),
            )
        )
        await indexer.start()
        gateway = create_gateway(
            GatewaySettings(
                dicom_port=0,
                grpc_port=0,
                indexer_target=f"127.0.0.1:{indexer.grpc_port}",
                default_tenant=tenant,
                workers=1,
            )
        )
        await gateway.start()
        try:
            index_times = await _find_worklist_grpc(indexer.grpc_port, tenant, queries, steps)
            days = max(1, min(10, steps // 100))  # days that have a step of ST007
            await asyncio.to_thread(_c_find, gateway.dicom_port, 5, days)
            times = await asyncio.to_thread(_c_find, gateway.dicom_port, queries, days)
        finally:
            await gateway.stop()
            await indexer.stop()
    times.sort()
    p95 = times[int(len(times) * 0.95) - 1]
    return (
        f"{steps}",
        f"{fill_s:.1f}",
        f"{statistics.median(times) * 1000:.1f}",
        f"{p95 * 1000:.1f}",
        f"{statistics.median(index_times) * 1000:.1f}",
        "the DIMSE exchange (pynetdicom SCU and SCP); the index query is the last column",
    )


async def _find_worklist_grpc(port: int, tenant: str, queries: int, steps: int) -> list[float]:
    """The same queries straight to QueryService.FindWorklist (as the local ``cli``)."""
    from pacs.query.v1 import query_service_pb2 as query_pb  # noqa: PLC0415
    from pacs.query.v1 import query_service_pb2_grpc as query_grpc  # noqa: PLC0415
    from pacs_testkit.channels import plain_aio_channel  # noqa: PLC0415

    days = max(1, min(10, steps // 100))
    channel = plain_aio_channel(f"127.0.0.1:{port}")
    stub = query_grpc.QueryServiceStub(channel)
    times = []
    for n in range(queries):
        match = {
            "ScheduledStationAETitle": "ST007",
            "ScheduledProcedureStepStartDate": f"202612{1 + n % days:02d}",
            "Modality": "CT",
        }
        started = time.perf_counter()
        await stub.FindWorklist(
            query_pb.FindWorklistRequest(query=query_pb.Query(tenant=tenant, match=match))
        )
        times.append(time.perf_counter() - started)
    await channel.close()
    return times


def _mwl_has(port: int, accession: str) -> bool:
    ae = AE(ae_title="AA2")
    ae.add_requested_context("1.2.840.10008.5.1.4.31")
    assoc = ae.associate("127.0.0.1", port, ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        query = Dataset()
        query.AccessionNumber = accession
        query.ScheduledProcedureStepSequence = [Dataset()]
        found = [
            s
            for s, _ in assoc.send_c_find(query, "1.2.840.10008.5.1.4.31")
            if s and s.Status == 0xFF00
        ]
        return bool(found)
    finally:
        assoc.release()


async def bench_orm_to_worklist(orders: int) -> tuple[str, ...]:
    """Time from an ORM's AA to its item in a C-FIND MWL answer (polled every 20 ms)."""
    from pacs_common.auth import AuthSettings  # noqa: PLC0415
    from pacs_common.events import TOPIC_WORKFLOW  # noqa: PLC0415
    from pacs_common.settings import KafkaSettings  # noqa: PLC0415
    from pacs_gateway.app import create_app as create_gateway  # noqa: PLC0415
    from pacs_gateway.settings import GatewaySettings  # noqa: PLC0415
    from pacs_hl7.app import create_app as create_hl7  # noqa: PLC0415
    from pacs_hl7.settings import Hl7Settings  # noqa: PLC0415
    from pacs_indexer.app import create_app as create_indexer  # noqa: PLC0415
    from pacs_indexer.settings import IndexerSettings  # noqa: PLC0415
    from pacs_testkit.kafka import group_at_end_of_topic  # noqa: PLC0415

    tenant = f"bench{uuid.uuid4().hex[:8]}"
    group = f"bench-indexer-{uuid.uuid4().hex[:8]}"
    await group_at_end_of_topic(group, KafkaSettings())
    await group_at_end_of_topic(f"{group}-wf", KafkaSettings(), TOPIC_WORKFLOW)
    latencies = []
    with tempfile.TemporaryDirectory() as tmp:
        indexer = create_indexer(
            IndexerSettings(
                grpc_port=0,
                database_url=f"sqlite:///{tmp}/index.sqlite",
                storage_target=f"127.0.0.1:{free_port()}",
                consumer_group=group,
                workflow_consumer_group=f"{group}-wf",
                auth=AuthSettings(trusted_services={"gateway"}),
            )
        )
        await indexer.start()
        gateway = create_gateway(
            GatewaySettings(
                dicom_port=0,
                grpc_port=0,
                indexer_target=f"127.0.0.1:{indexer.grpc_port}",
                default_tenant=tenant,
                workers=1,
            )
        )
        await gateway.start()
        hl7 = create_hl7(Hl7Settings(grpc_port=0, mllp_port=0, default_tenant=tenant))
        await hl7.start()
        try:
            reader, writer = await open_hl7_connection("127.0.0.1", hl7.mllp_port)
            for _ in range(orders):
                accession = uuid.uuid4().hex[:10]
                writer.writemessage(orm("PLAT", accession))
                await writer.drain()
                ack = await reader.readmessage()
                assert str(ack.segment("MSA")(1)) == "AA"
                acked = time.perf_counter()
                # polling as a modality does: there is no event to wait on
                while not await asyncio.to_thread(  # noqa: ASYNC110
                    _mwl_has, gateway.dicom_port, accession
                ):
                    await asyncio.sleep(0.02)
                latencies.append(time.perf_counter() - acked)
            writer.close()
        finally:
            await hl7.stop()
            await gateway.stop()
            await indexer.stop()
    latencies.sort()
    return (
        str(orders),
        f"{statistics.median(latencies) * 1000:.0f}",
        f"{latencies[-1] * 1000:.0f}",
        "indexer consumer fetch + one transaction; C-FIND polling every 20 ms",
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--orders", type=int, default=20, help="ORMs timed to the worklist")
    args = parser.parse_args()
    os.environ.update(infra_environment())
    os.environ.setdefault("PACS_TLS_DIR", str(ensure_local_pki()))
    console = Console()
    table = Table(title=f"HL7 end to end, {args.connections} MLLP connections (goal >= 500 msg/s)")
    for column in ("server", "messages", "msg/s", "server CPU ms/msg", "bounded by"):
        table.add_column(column)
    for row in await bench_messages(args.messages, args.connections):
        table.add_row(*row)
    console.print(table)
    worklist = Table(title="Modality Worklist C-FIND (pynetdicom SCU: one station, one day)")
    for column in (
        "scheduled steps",
        "fill s",
        "C-FIND p50 ms",
        "C-FIND p95 ms",
        "FindWorklist gRPC p50 ms",
        "bounded by",
    ):
        worklist.add_column(column)
    worklist.add_row(*await bench_worklist(args.steps, args.queries))
    console.print(worklist)
    latency = Table(title="ORM^O01 ACK (AA) to its item in a modality's C-FIND MWL answer")
    for column in ("orders", "p50 ms", "max ms", "bounded by"):
        latency.add_column(column)
    latency.add_row(*await bench_orm_to_worklist(args.orders))
    console.print(latency)
    console.print(f"CPU cores: {psutil.cpu_count()}; load average {os.getloadavg()}")


if __name__ == "__main__":
    asyncio.run(main())

"""The gRPC metrics interceptor and the /metrics endpoint, through a real in-process server.

A tiny bytes-in/bytes-out service (no protos needed) exposes the four RPC kinds; it runs in the
same server as the standard health service, on the service host exactly as the services run.
"""

from __future__ import annotations

import asyncio
import os
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pacs_common.errors import NotFoundError
from pacs_common.metrics import DICOM_ASSOCIATIONS_REJECTED, start_metrics_server
from pacs_common.service_host import ServiceHost
from pacs_common.settings import ServiceSettings
from pacs_common.tls import TlsSettings
from prometheus_client import REGISTRY

SERVICE = "pacs.test.v1.MetricsProbe"


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    if request == b"missing":
        raise NotFoundError("no such thing")
    if request == b"boom":
        raise RuntimeError("unexpected")
    return request


async def _concat(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
) -> bytes:
    return b"".join([chunk async for chunk in requests])


async def _split(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    for byte in request:
        yield bytes([byte])
    if request.startswith(b"x"):
        raise NotFoundError("stopped after the items")


async def _bounce(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    async for chunk in requests:
        yield chunk.upper()


def _register(server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Echo": grpc.unary_unary_rpc_method_handler(_echo),
                    "Concat": grpc.stream_unary_rpc_method_handler(_concat),
                    "Split": grpc.unary_stream_rpc_method_handler(_split),
                    "Bounce": grpc.stream_stream_rpc_method_handler(_bounce),
                },
            )
        ]
    )


def _scrape(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url) as response:
        return int(response.status), response.read().decode()


def _count(method: str, code: str, service: str = SERVICE) -> float:
    value = REGISTRY.get_sample_value(
        "pacs_grpc_server_requests_total",
        {"service": service, "method": method, "code": code},
    )
    return value or 0.0


def _observations(method: str, service: str = SERVICE) -> float:
    value = REGISTRY.get_sample_value(
        "pacs_grpc_server_request_duration_seconds_count",
        {"service": service, "method": method},
    )
    return value or 0.0


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    # Plaintext: this is about metrics; mutual TLS is tested in test_service_identity.
    settings = ServiceSettings(grpc_port=0, shutdown_grace_s=0, grpc_tls=TlsSettings(enabled=False))
    host = ServiceHost(settings, [SERVICE], _register)
    await host.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as chan:
        yield chan
    await host.stop()


async def test_unary_call_is_counted_with_ok_and_timed(channel: grpc.aio.Channel) -> None:
    before, timed_before = _count("Echo", "OK"), _observations("Echo")

    reply = await channel.unary_unary(f"/{SERVICE}/Echo")(b"hello")

    assert reply == b"hello"
    assert _count("Echo", "OK") == before + 1
    assert _observations("Echo") == timed_before + 1


async def test_domain_error_is_counted_with_its_status_code(channel: grpc.aio.Channel) -> None:
    before = _count("Echo", "NOT_FOUND")

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary(f"/{SERVICE}/Echo")(b"missing")

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert _count("Echo", "NOT_FOUND") == before + 1


async def test_unexpected_exception_is_counted_as_internal(channel: grpc.aio.Channel) -> None:
    before = _count("Echo", "INTERNAL")

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary(f"/{SERVICE}/Echo")(b"boom")

    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert _count("Echo", "INTERNAL") == before + 1


async def test_streaming_kinds_are_counted(channel: grpc.aio.Channel) -> None:
    before = {m: _count(m, "OK") for m in ("Concat", "Split", "Bounce")}
    split_error_before = _count("Split", "NOT_FOUND")

    def chunks() -> Iterator[bytes]:
        yield from (b"ab", b"cd")

    assert await channel.stream_unary(f"/{SERVICE}/Concat")(chunks()) == b"abcd"
    assert [m async for m in channel.unary_stream(f"/{SERVICE}/Split")(b"ok")] == [b"o", b"k"]
    bounced = [m async for m in channel.stream_stream(f"/{SERVICE}/Bounce")(chunks())]
    assert bounced == [b"AB", b"CD"]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        _ = [m async for m in channel.unary_stream(f"/{SERVICE}/Split")(b"xy")]

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert {m: _count(m, "OK") for m in before} == {m: n + 1 for m, n in before.items()}
    assert _count("Split", "NOT_FOUND") == split_error_before + 1


async def test_health_checks_are_counted_under_their_own_service(
    channel: grpc.aio.Channel,
) -> None:
    health_service = "grpc.health.v1.Health"
    ok_before = _count("Check", "OK", health_service)
    unknown_before = _count("Check", "NOT_FOUND", health_service)
    stub = health_pb2_grpc.HealthStub(channel)

    served = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))

    assert served.status == health_pb2.HealthCheckResponse.SERVING
    assert _count("Check", "OK", health_service) == ok_before + 1
    assert _count("Check", "NOT_FOUND", health_service) == unknown_before + 1


async def test_metrics_endpoint_serves_the_counters(channel: grpc.aio.Channel) -> None:
    await channel.unary_unary(f"/{SERVICE}/Echo")(b"scrape me")
    DICOM_ASSOCIATIONS_REJECTED.labels(reason="unknown_calling_ae").inc()
    server = start_metrics_server(0, host="127.0.0.1")
    try:
        status, body = await asyncio.to_thread(_scrape, f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.stop()
        server.stop()

    assert status == 200
    assert f'pacs_grpc_server_requests_total{{code="OK",method="Echo",service="{SERVICE}"}}' in (
        body
    )
    assert 'pacs_dicom_associations_rejected_total{reason="unknown_calling_ae"}' in body
    assert "pacs_grpc_server_request_duration_seconds_bucket{" in body
    assert "# TYPE pacs_kafka_consumer_lag gauge" in body


WORKERS_SCRIPT = """
import multiprocessing, sys
from pacs_common.metrics import DICOM_CSTORE_BYTES, start_metrics_server

def receive(nbytes):
    DICOM_CSTORE_BYTES.inc(nbytes)

if __name__ == "__main__":
    workers = [multiprocessing.Process(target=receive, args=(n,)) for n in (100, 250)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    server = start_metrics_server(0, host="127.0.0.1")
    print(server.port, flush=True)
    sys.stdin.read()
    server.stop()
"""


async def test_worker_processes_are_summed_in_multiprocess_mode(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKERS_SCRIPT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        port = int(await asyncio.wait_for(process.stdout.readline(), timeout=30))
        status, body = await asyncio.to_thread(_scrape, f"http://127.0.0.1:{port}/metrics")
    finally:
        process.stdin.close()
        await process.wait()

    assert status == 200
    assert "pacs_dicom_cstore_bytes_total 350.0" in body

"""The ordered stop of the service host: drain calls in flight, then consumers, then producers,
all within one deadline.

The order is observed through events the handler and the stop hooks record, never through
timing; only the deadline test measures time, with generous bounds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from pacs_common.grpc_client import open_channel
from pacs_common.pki import ensure_pki
from pacs_common.service_host import ServiceHost, StopStage
from pacs_common.settings import ServiceSettings
from pacs_common.tls import TlsSettings

SERVICE = "pacs.test.v1.StopProbe"


class SlowService:
    """One call that holds until the test releases it."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def work(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        self.entered.set()
        await self.release.wait()
        self.events.append("call finished")
        return request

    def register(self, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    SERVICE, {"Work": grpc.unary_unary_rpc_method_handler(self.work)}
                )
            ]
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    ensure_pki(directory, ["probe", "cli"])
    return directory


def settings_of(pki: Path, grace_s: float) -> ServiceSettings:
    return ServiceSettings(
        service_name="probe",
        grpc_port=0,
        shutdown_grace_s=grace_s,
        grpc_tls=TlsSettings(dir=pki),
        allowed_peers=["cli"],
    )


@pytest.fixture
async def channel_factory(pki: Path) -> AsyncIterator[list[grpc.aio.Channel]]:
    channels: list[grpc.aio.Channel] = []
    yield channels
    for channel in channels:
        await channel.close()


async def test_a_call_in_flight_completes_then_the_consumer_stops_before_the_producer_flushes(
    pki: Path, channel_factory: list[grpc.aio.Channel]
) -> None:
    events: list[str] = []
    service = SlowService(events)
    host = ServiceHost(settings_of(pki, grace_s=30), [SERVICE], service.register)

    async def stop_consumer() -> None:
        events.append("consumer stopped")

    async def flush_producer() -> None:
        events.append("producer flushed")

    async def close_resources() -> None:
        events.append("resources closed")

    # Registered out of order on purpose: the stage decides, not the registration.
    host.on_stop("producer", flush_producer, StopStage.PRODUCERS)
    host.on_stop("resources", close_resources, StopStage.RESOURCES)
    host.on_stop("consumer", stop_consumer, StopStage.CONSUMERS)
    await host.start()
    channel = open_channel(f"127.0.0.1:{host.port}", TlsSettings(dir=pki, identity="cli"))
    channel_factory.append(channel)
    call = asyncio.ensure_future(channel.unary_unary(f"/{SERVICE}/Work")(b"job", timeout=30))
    await asyncio.wait_for(service.entered.wait(), 10)

    stopping = asyncio.create_task(host.stop())
    await asyncio.sleep(0.2)  # the stop has begun and waits for the call in flight
    assert events == []
    service.release.set()
    await asyncio.wait_for(stopping, 10)

    assert await call == b"job"
    assert events == ["call finished", "consumer stopped", "producer flushed", "resources closed"]
    await host.stop()  # safe twice
    assert events.count("consumer stopped") == 1


async def test_every_step_shares_one_deadline_even_when_steps_hang(pki: Path) -> None:
    events: list[str] = []
    host = ServiceHost(settings_of(pki, grace_s=1.5), [SERVICE], SlowService(events).register)

    async def hang() -> None:
        await asyncio.Event().wait()

    for stage in (StopStage.CONSUMERS, StopStage.PRODUCERS, StopStage.RESOURCES):
        host.on_stop(f"stuck {stage.name}", hang, stage)
    host.on_stop("one more", hang, StopStage.RESOURCES)
    await host.start()

    started = time.monotonic()
    await asyncio.wait_for(host.stop(), 20)

    # One deadline of 1.5 s for all four steps; a grace per step would take 6 s.
    assert time.monotonic() - started < 4


async def test_sigterm_drains_the_call_in_flight_then_stops_consumers_before_producers(
    pki: Path, channel_factory: list[grpc.aio.Channel]
) -> None:
    events: list[str] = []
    service = SlowService(events)
    host = ServiceHost(settings_of(pki, grace_s=30), [SERVICE], service.register)

    async def stop_consumer() -> None:
        events.append("consumer stopped")

    async def flush_producer() -> None:
        events.append("producer flushed")

    host.on_stop("consumer", stop_consumer, StopStage.CONSUMERS)
    host.on_stop("producer", flush_producer, StopStage.PRODUCERS)
    await host.start()
    channel = open_channel(f"127.0.0.1:{host.port}", TlsSettings(dir=pki, identity="cli"))
    channel_factory.append(channel)
    serving = asyncio.create_task(host.run_until_signalled())
    call = asyncio.ensure_future(channel.unary_unary(f"/{SERVICE}/Work")(b"job", timeout=30))
    await asyncio.wait_for(service.entered.wait(), 10)

    os.kill(os.getpid(), signal.SIGTERM)  # handled by the host's loop handler, not the default
    await asyncio.sleep(0.2)
    assert host.stopping
    assert events == []
    service.release.set()
    await asyncio.wait_for(serving, 10)

    assert await call == b"job"
    assert events == ["call finished", "consumer stopped", "producer flushed"]

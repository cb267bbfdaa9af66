"""Service identity on the service host: mutual TLS at the handshake, allowed peers per call.

A tiny bytes-in/bytes-out service (no protos needed) runs on a real :class:`ServiceHost` with
certificates from a CA made for the test by :mod:`pacs_common.pki`; callers present the
certificates of several identities, of no identity, or of another CA.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pacs_common import health_probe
from pacs_common.grpc_client import open_channel
from pacs_common.peers import peer_identity
from pacs_common.pki import ensure_pki
from pacs_common.service_host import ServiceHost
from pacs_common.settings import ServiceSettings
from pacs_common.tls import TlsSettings

SERVICE = "pacs.test.v1.IdentityProbe"


class Probe:
    """Records every call its handlers ran, and who made it."""

    def __init__(self) -> None:
        self.calls: list[str | None] = []

    async def echo(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        self.calls.append(peer_identity(context))
        return request

    async def concat(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        self.calls.append(peer_identity(context))
        return b"".join([part async for part in requests])

    def register(self, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    SERVICE,
                    {
                        "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
                        "Concat": grpc.stream_unary_rpc_method_handler(self.concat),
                    },
                )
            ]
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA of the test and identities: the service, an allowed caller, a caller not allowed."""
    directory = tmp_path_factory.mktemp("pki")
    ensure_pki(directory, ["probe", "cli", "hl7"])
    return directory


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another CA, which issued a certificate with an allowed name."""
    directory = tmp_path_factory.mktemp("other-pki")
    ensure_pki(directory, ["cli"])
    return directory


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def host(pki: Path, probe: Probe) -> AsyncIterator[ServiceHost]:
    settings = ServiceSettings(
        service_name="probe",
        grpc_port=0,
        shutdown_grace_s=1,
        grpc_tls=TlsSettings(dir=pki),
        allowed_peers=["cli"],
    )
    host = ServiceHost(settings, [SERVICE], probe.register)
    await host.start()
    yield host
    await host.stop()


def as_identity(pki: Path, name: str) -> TlsSettings:
    return TlsSettings(dir=pki, identity=name)


async def echo(channel: grpc.aio.Channel) -> bytes:
    reply: bytes = await channel.unary_unary(f"/{SERVICE}/Echo")(b"ping", timeout=5)
    return reply


async def test_an_allowed_peer_is_served_and_its_identity_reaches_the_servicer(
    host: ServiceHost, pki: Path, probe: Probe
) -> None:
    async with open_channel(f"127.0.0.1:{host.port}", as_identity(pki, "cli")) as channel:
        assert await echo(channel) == b"ping"

    assert probe.calls == ["cli"]


async def test_a_plaintext_channel_is_refused(host: ServiceHost, probe: Probe) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await echo(channel)

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert probe.calls == []


async def test_tls_without_a_client_certificate_fails_at_the_handshake(
    host: ServiceHost, pki: Path, probe: Probe
) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.crt").read_bytes())
    async with open_channel(f"127.0.0.1:{host.port}", credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await echo(channel)

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert probe.calls == []


async def test_a_certificate_from_another_ca_fails_at_the_handshake(
    host: ServiceHost, pki: Path, other_pki: Path, probe: Probe
) -> None:
    # The name is an allowed one, and the caller trusts the service: only the CA differs.
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.crt").read_bytes(),
        private_key=(other_pki / "cli.key").read_bytes(),
        certificate_chain=(other_pki / "cli.crt").read_bytes(),
    )
    async with open_channel(f"127.0.0.1:{host.port}", credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await echo(channel)

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert probe.calls == []


async def test_a_peer_outside_the_allowed_set_is_denied_before_the_handler_runs(
    host: ServiceHost, pki: Path, probe: Probe, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_channel(f"127.0.0.1:{host.port}", as_identity(pki, "hl7")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await echo(channel)
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            await channel.stream_unary(f"/{SERVICE}/Concat")(iter([b"a", b"b"]), timeout=5)

    assert unary.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert streamed.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "hl7" in (unary.value.details() or "")
    assert probe.calls == []
    refusals = [r for r in caplog.records if r.getMessage() == "call refused: peer not allowed"]
    assert [getattr(r, "peer", None) for r in refusals] == ["hl7", "hl7"]


async def test_health_answers_any_peer_with_a_certificate_from_the_ca(
    host: ServiceHost, pki: Path
) -> None:
    # Probes (grpc_health_probe in Kubernetes) carry a certificate that is no allowed caller.
    async with open_channel(f"127.0.0.1:{host.port}", as_identity(pki, "hl7")) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=5
        )

    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_missing_certificate_stops_the_start_naming_the_file(
    tmp_path: Path, probe: Probe
) -> None:
    ensure_pki(tmp_path, ["cli"])  # a CA, but no certificate for this service
    settings = ServiceSettings(
        service_name="probe", grpc_port=0, grpc_tls=TlsSettings(dir=tmp_path)
    )
    host = ServiceHost(settings, [SERVICE], probe.register)

    with pytest.raises(SystemExit) as raised:
        await host.start()

    message = str(raised.value)
    assert str(tmp_path / "probe.crt") in message
    assert f"python -m pacs_common.pki {tmp_path} probe" in message
    await host.stop()


async def test_without_any_tls_setting_the_start_says_what_to_set(probe: Probe) -> None:
    settings = ServiceSettings(service_name="probe", grpc_port=0, grpc_tls=TlsSettings(dir=None))
    host = ServiceHost(settings, [SERVICE], probe.register)

    with pytest.raises(SystemExit, match="PACS_TLS_DIR"):
        await host.start()
    await host.stop()


async def test_plaintext_only_when_switched_off_explicitly_and_then_with_a_warning(
    probe: Probe, caplog: pytest.LogCaptureFixture
) -> None:
    assert TlsSettings().enabled  # on by default
    settings = ServiceSettings(
        service_name="probe", grpc_port=0, grpc_tls=TlsSettings(enabled=False)
    )
    host = ServiceHost(settings, [SERVICE], probe.register)
    with caplog.at_level(logging.WARNING):
        await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            assert await echo(channel) == b"ping"
    finally:
        await host.stop()

    assert any("mutual TLS is OFF" in r.getMessage() for r in caplog.records)


def test_the_identity_defaults_to_the_service_name(pki: Path) -> None:
    settings = ServiceSettings(service_name="storage", grpc_tls=TlsSettings(dir=pki))

    assert settings.grpc_tls.identity == "storage"
    assert settings.grpc_tls.files()[1] == pki / "storage.crt"


async def test_the_kubernetes_probe_checks_health_with_the_pods_own_certificate(
    host: ServiceHost, pki: Path
) -> None:
    # The probe runs in the service's pod with the service's certificate (which names the
    # service, not 127.0.0.1); the native gRPC probe of the kubelet cannot do mutual TLS.
    own = TlsSettings(dir=pki, identity="probe")
    assert await asyncio.to_thread(health_probe.check, host.port, SERVICE, 5, own)
    assert not await asyncio.to_thread(health_probe.check, host.port, "no.such.Service", 5, own)

"""Caller authorization against the real OpenID provider (hydra from ``infra/up.sh``), and
the trusted-service path over a real mutual-TLS connection with certificates made here.

A probe service behind ``build_server`` and :class:`AuthorizationInterceptor` answers with the
tenant a call acts on and counts the calls that reached it: a refused call must not reach it
(nothing read, nothing written). Tokens come from hydra by the client-credentials grant; the
forged one is signed with a key of our own that claims hydra's key id, issuer and audience.
"""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pacs_common.auth import (
    AuthorizationInterceptor,
    AuthSettings,
    Caller,
    Role,
    bearer_token,
    caller_from_claims,
    caller_of,
    resolve_caller,
)
from pacs_common.errors import InvalidArgumentError, PermissionDeniedError, UnauthenticatedError
from pacs_common.grpc_server import build_server
from pacs_testkit.hydra import Hydra

pytestmark = pytest.mark.integration

SERVICE = "pacs.test.v1.AuthProbe"
ROLES = {SERVICE: {"Read": Role.QUERY, "Stream": Role.QUERY, "Upload": Role.INGEST}}


class Probe:
    """Handlers that act on ``caller_of(context).tenant_for(<request>)`` and count entries."""

    def __init__(self) -> None:
        self.entered = 0

    async def read(self, request: bytes, context: Any) -> bytes:
        self.entered += 1
        return caller_of(context).tenant_for(request.decode()).encode()

    async def stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        self.entered += 1
        tenant = caller_of(context).tenant_for(request.decode())
        for _ in range(2):
            yield tenant.encode()

    async def upload(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        self.entered += 1
        async for _part in requests:
            pass
        return caller_of(context).tenant_for("").encode()

    async def admin(self, request: bytes, context: Any) -> bytes:
        self.entered += 1
        return b"done"


def _register(probe: Probe) -> Any:
    def register(server: grpc.aio.Server) -> None:
        handlers = {
            "Read": grpc.unary_unary_rpc_method_handler(probe.read),
            "Stream": grpc.unary_stream_rpc_method_handler(probe.stream),
            "Upload": grpc.stream_unary_rpc_method_handler(probe.upload),
            "Admin": grpc.unary_unary_rpc_method_handler(probe.admin),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    return register


@pytest.fixture
def settings(hydra: Hydra) -> AuthSettings:
    """Settings for the local hydra (issuer from infra.env), no clock leeway."""
    return AuthSettings(issuer=hydra.issuer, audience=hydra.audience, leeway_s=0)


class Served:
    """A running probe server and a channel to it."""

    def __init__(self, probe: Probe, channel: grpc.aio.Channel) -> None:
        self.probe = probe
        self.channel = channel

    async def read(self, tenant: str = "", metadata: Any = None) -> str:
        call = self.channel.unary_unary(f"/{SERVICE}/Read")
        return (await call(tenant.encode(), metadata=metadata, timeout=10)).decode()

    async def admin(self, metadata: Any = None) -> bytes:
        call = self.channel.unary_unary(f"/{SERVICE}/Admin")
        result: bytes = await call(b"", metadata=metadata, timeout=10)
        return result

    async def stream(self, tenant: str = "", metadata: Any = None) -> list[str]:
        call = self.channel.unary_stream(f"/{SERVICE}/Stream")
        return [m.decode() async for m in call(tenant.encode(), metadata=metadata, timeout=10)]

    async def upload(self, metadata: Any = None) -> str:
        async def parts() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b"x" * 1000

        call = self.channel.stream_unary(f"/{SERVICE}/Upload")
        return (await call(parts(), metadata=metadata, timeout=10)).decode()


@pytest.fixture
async def served(settings: AuthSettings) -> AsyncIterator[Served]:
    probe = Probe()
    server, _health = build_server(
        _register(probe), [SERVICE], interceptors=[AuthorizationInterceptor(settings, ROLES)]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield Served(probe, channel)
    await channel.close()
    await server.stop(None)


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def _code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    code: grpc.StatusCode = info.value.code()
    return code


async def test_valid_token_acts_on_its_own_tenant(served: Served, hydra: Hydra, tenant: str):
    metadata = hydra.metadata(tenant, [Role.QUERY])
    assert await served.read("", metadata) == tenant
    assert await served.read(tenant, metadata) == tenant
    assert await served.stream("", metadata) == [tenant, tenant]
    assert served.probe.entered == 3


async def test_missing_token_is_unauthenticated_and_reaches_nothing(served: Served):
    assert await _code_of(served.read("t1")) == grpc.StatusCode.UNAUTHENTICATED
    assert await _code_of(served.stream("t1")) == grpc.StatusCode.UNAUTHENTICATED
    assert await _code_of(served.upload()) == grpc.StatusCode.UNAUTHENTICATED
    assert served.probe.entered == 0


async def test_not_a_bearer_header_is_unauthenticated(served: Served, hydra: Hydra, tenant: str):
    token = hydra.token(tenant, [Role.QUERY])
    basic = (("authorization", f"Basic {token}"),)
    assert await _code_of(served.read("", basic)) == grpc.StatusCode.UNAUTHENTICATED
    assert served.probe.entered == 0


async def test_another_tenants_data_is_permission_denied(served: Served, hydra: Hydra, tenant: str):
    metadata = hydra.metadata(tenant, [Role.QUERY])
    other = f"{tenant}-other"
    assert await _code_of(served.read(other, metadata)) == grpc.StatusCode.PERMISSION_DENIED
    assert await _code_of(served.stream(other, metadata)) == grpc.StatusCode.PERMISSION_DENIED


async def test_missing_role_is_permission_denied_before_the_handler(
    served: Served, hydra: Hydra, tenant: str
):
    query_only = hydra.metadata(tenant, [Role.QUERY])
    assert await _code_of(served.upload(query_only)) == grpc.StatusCode.PERMISSION_DENIED
    # A method without a declared role needs admin (fail closed).
    assert await _code_of(served.admin(query_only)) == grpc.StatusCode.PERMISSION_DENIED
    assert served.probe.entered == 0
    assert await served.admin(hydra.metadata(tenant, [Role.ADMIN])) == b"done"
    assert await served.upload(hydra.metadata(tenant, [Role.INGEST])) == tenant


async def test_expired_token_is_unauthenticated(served: Served, hydra: Hydra, tenant: str):
    # Long enough that the first call is certainly in time on a loaded machine (1 s was not).
    client = hydra.client(tenant, [Role.QUERY], lifespan="5s")
    token = client.token()
    assert await served.read("", _bearer(token)) == tenant
    payload = jwt.decode(token, options={"verify_signature": False})
    await asyncio.sleep(max(0.0, payload["exp"] - time.time()) + 1.1)
    assert await _code_of(served.read("", _bearer(token))) == grpc.StatusCode.UNAUTHENTICATED
    assert served.probe.entered == 1


async def test_forged_token_is_unauthenticated(served: Served, hydra: Hydra, tenant: str):
    real = hydra.token(tenant, [Role.QUERY])
    claims = jwt.decode(real, options={"verify_signature": False})
    kid = jwt.get_unverified_header(real)["kid"]
    own_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        {**claims, "scp": [f"pacs:tenant:{tenant}", "pacs:role:admin"]},
        own_key,
        algorithm="RS256",
        headers={"kid": kid},
    )
    assert await _code_of(served.read("", _bearer(forged))) == grpc.StatusCode.UNAUTHENTICATED
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert await _code_of(served.read("", _bearer(unsigned))) == grpc.StatusCode.UNAUTHENTICATED
    assert await _code_of(served.read("", _bearer("not.a.jwt"))) == grpc.StatusCode.UNAUTHENTICATED
    assert served.probe.entered == 0


async def test_token_for_another_audience_is_unauthenticated(
    served: Served, hydra: Hydra, tenant: str
):
    token = hydra.client(tenant, [Role.QUERY], audience="another-api").token()
    assert await _code_of(served.read("", _bearer(token))) == grpc.StatusCode.UNAUTHENTICATED
    assert served.probe.entered == 0


async def test_token_from_another_issuer_is_unauthenticated(hydra: Hydra, tenant: str):
    # The same keys, but the service trusts another issuer name: hydra's `iss` must not pass.
    settings = AuthSettings(
        issuer="http://127.0.0.1:1/not-hydra", jwks_url=f"{hydra.issuer}/.well-known/jwks.json"
    )
    with pytest.raises(UnauthenticatedError, match="another issuer"):
        await settings.verifier().verify(hydra.token(tenant, [Role.QUERY]))


async def test_rotated_key_is_accepted_after_the_verifier_refreshes(hydra: Hydra, tenant: str):
    settings = AuthSettings(issuer=hydra.issuer, audience=hydra.audience, min_jwks_refresh_s=0)
    verifier = settings.verifier()
    before = hydra.client(tenant, [Role.QUERY]).token()
    await verifier.verify(before)  # the key set is cached now

    hydra.rotate_access_token_keys()
    after = hydra.client(tenant, [Role.QUERY], lifespan="1h").token()
    assert jwt.get_unverified_header(after)["kid"] != jwt.get_unverified_header(before)["kid"]
    claims = await verifier.verify(after)
    assert caller_from_claims(claims, settings).tenant == tenant


async def test_unknown_key_ids_do_not_refetch_the_key_set_more_than_once(hydra: Hydra, tenant: str):
    settings = AuthSettings(issuer=hydra.issuer, audience=hydra.audience, min_jwks_refresh_s=60)
    verifier = settings.verifier()
    await verifier.verify(hydra.token(tenant, [Role.QUERY]))
    own_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fetches = 0
    original = verifier._jwks.fetch_data

    def counting() -> Any:
        nonlocal fetches
        fetches += 1
        return original()

    verifier._jwks.fetch_data = counting  # type: ignore[method-assign]
    for _ in range(5):
        forged = jwt.encode(
            {"iss": hydra.issuer, "aud": [hydra.audience], "exp": time.time() + 60},
            own_key,
            algorithm="RS256",
            headers={"kid": f"made-up-{uuid.uuid4()}"},
        )
        with pytest.raises(UnauthenticatedError, match="unknown key"):
            await verifier.verify(forged)
    assert fetches == 1


# --- the trusted-service path (peer identity = mTLS certificate CN) and the claim mapping ---


@pytest.fixture
def offline_settings() -> Iterator[AuthSettings]:
    yield AuthSettings(trusted_services="gateway, dicomweb")  # type: ignore[arg-type]


async def test_trusted_service_without_token_acts_on_the_requested_tenant(
    offline_settings: AuthSettings,
):
    verifier = offline_settings.verifier()
    caller = await resolve_caller(None, "gateway", verifier, offline_settings)
    assert caller.trusted_service
    assert caller.tenant_for("site-a") == "site-a"
    caller.require(Role.ADMIN)
    with pytest.raises(InvalidArgumentError):
        caller.tenant_for("")


async def test_untrusted_peer_without_token_is_unauthenticated(offline_settings: AuthSettings):
    verifier = offline_settings.verifier()
    for peer in ("storage", "", None):
        with pytest.raises(UnauthenticatedError):
            await resolve_caller(None, peer, verifier, offline_settings)


async def test_a_token_wins_over_a_trusted_peer(hydra: Hydra, tenant: str):
    settings = AuthSettings(issuer=hydra.issuer, trusted_services={"gateway"})
    caller = await resolve_caller(
        hydra.token(tenant, [Role.QUERY]), "gateway", settings.verifier(), settings
    )
    assert not caller.trusted_service
    with pytest.raises(PermissionDeniedError):
        caller.tenant_for("someone-else")


def test_bearer_token_parsing() -> None:
    assert bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("x-other", "1")]) is None
    with pytest.raises(UnauthenticatedError):
        bearer_token([("authorization", "Bearer ")])


def test_claims_of_other_providers_map_through_configured_claim_names() -> None:
    # Entra-style app roles and a Keycloak mapper's tenant claim.
    settings = AuthSettings(tenant_claim="tenant", roles_claim="roles")
    caller = caller_from_claims({"sub": "app", "tenant": "t1", "roles": ["query"]}, settings)
    assert caller == Caller("app", "t1", frozenset({"query"}))
    # RFC 9068 space-separated `scope`.
    scoped = caller_from_claims(
        {"sub": "app", "scope": "pacs:tenant:t2 pacs:role:ingest openid"}, AuthSettings()
    )
    assert (scoped.tenant, scoped.roles) == ("t2", frozenset({"ingest"}))
    with pytest.raises(PermissionDeniedError):
        caller_from_claims({"scp": ["pacs:tenant:a", "pacs:tenant:b"]}, AuthSettings())
    with pytest.raises(PermissionDeniedError):
        caller_from_claims({"scp": ["pacs:role:admin"]}, AuthSettings())


def test_symmetric_algorithms_are_refused_in_settings() -> None:
    for algorithms in (["HS256"], ["RS256", "none"], []):
        with pytest.raises(ValueError, match="asymmetric"):
            AuthSettings(algorithms=algorithms)


# --- the same through a real mutual-TLS connection: the CN comes from grpc's auth context ---


def _certificate(
    name: str, key: rsa.RSAPrivateKey, issuer: x509.Name, signer: rsa.RSAPrivateKey, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


def _pem(key: rsa.RSAPrivateKey, cert: x509.Certificate) -> tuple[bytes, bytes]:
    return (
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert.public_bytes(serialization.Encoding.PEM),
    )


async def test_trusted_service_over_mutual_tls_acts_on_the_requested_tenant() -> None:
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    ca_pem = _pem(ca_key, _certificate("test-ca", ca_key, ca_name, ca_key, True))[1]
    pems = {}
    for name in ("localhost", "gateway", "storage"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pems[name] = _pem(key, _certificate(name, key, ca_name, ca_key, False))

    probe = Probe()
    settings = AuthSettings(trusted_services={"gateway"})
    server, _health = build_server(
        _register(probe), [SERVICE], interceptors=[AuthorizationInterceptor(settings, ROLES)]
    )
    port = server.add_secure_port(
        "127.0.0.1:0",
        grpc.ssl_server_credentials(
            [pems["localhost"]], root_certificates=ca_pem, require_client_auth=True
        ),
    )
    await server.start()
    try:
        results = {}
        for client in ("gateway", "storage"):
            key_pem, cert_pem = pems[client]
            credentials = grpc.ssl_channel_credentials(ca_pem, key_pem, cert_pem)
            async with grpc.aio.secure_channel(
                f"127.0.0.1:{port}",
                credentials,
                options=[("grpc.ssl_target_name_override", "localhost")],
            ) as channel:
                read = channel.unary_unary(f"/{SERVICE}/Read")
                try:
                    results[client] = (await read(b"site-a", timeout=10)).decode()
                except grpc.aio.AioRpcError as exc:
                    results[client] = exc.code()
    finally:
        await server.stop(None)
    assert results == {"gateway": "site-a", "storage": grpc.StatusCode.UNAUTHENTICATED}
    assert probe.entered == 1

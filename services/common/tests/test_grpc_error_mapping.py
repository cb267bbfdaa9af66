"""The error-mapping interceptor of ``build_server``, through a real in-process server.

The case that matters most: a storage Put refused at once (Kafka down) while the gateway is
still streaming the object must reach the gateway as retriable, every time, because only that
makes it answer "out of resources" so the modality keeps the image and retries. grpcio's client
sometimes loses the server's status then and reports INTERNAL "Internal error from Core"
(measured here: 14-68 in 1,000 calls when the handler returned with a status, 5-12 when it
aborts), which once made a C-STORE fail for good in CI.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator

import grpc
import pytest
from pacs_common.errors import (
    NotFoundError,
    UnavailableError,
    is_retriable,
    status_lost_in_transport,
)
from pacs_common.grpc_server import build_server

SERVICE = "pacs.test.v1.ErrorProbe"
CALLS = 1_000


async def _refuse_after_first(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
) -> bytes:
    async for _header in requests:
        break
    raise UnavailableError("Kafka is unreachable")


async def _not_found(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    raise NotFoundError("no such instance")


def _register(server: grpc.aio.Server) -> None:
    handlers = {
        "Put": grpc.stream_unary_rpc_method_handler(_refuse_after_first),
        "Head": grpc.unary_unary_rpc_method_handler(_not_found),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


async def _object_stream() -> AsyncIterator[bytes]:
    yield b"header"
    for _ in range(3):
        yield b"x" * 40_000


@pytest.fixture
async def probe_channel() -> AsyncIterator[grpc.aio.Channel]:
    server, _health = build_server(_register, [SERVICE])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(0)


async def test_refused_client_stream_is_always_unavailable(probe_channel: grpc.aio.Channel) -> None:
    put = probe_channel.stream_unary(f"/{SERVICE}/Put")
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(CALLS):
        try:
            await put(_object_stream(), timeout=10)
            seen["succeeded"] += 1
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                assert exc.details() == "Kafka is unreachable"
                seen["unavailable"] += 1
            elif status_lost_in_transport(exc):
                seen["status lost"] += 1
            else:
                seen[f"{exc.code().name}: {exc.details()}"] += 1
            assert is_retriable(exc)
    assert seen["unavailable"] + seen["status lost"] == CALLS, seen


async def test_domain_error_of_a_unary_call_keeps_its_code(probe_channel: grpc.aio.Channel) -> None:
    head = probe_channel.unary_unary(f"/{SERVICE}/Head")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await head(b"x", timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == "no such instance"

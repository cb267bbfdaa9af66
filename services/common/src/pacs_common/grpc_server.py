"""gRPC server bootstrap shared by every service.

:func:`build_server` returns a ``grpc.aio`` server with the error-mapping interceptor, the
standard health service (``grpc.health.v1``) and reflection; :class:`GrpcServerRunner` starts it,
flips health to SERVING, and on SIGTERM/SIGINT sets NOT_SERVING, stops with a grace period and
runs the service's own cleanup.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from pacs_common.errors import PacsError
from pacs_common.grpc_handlers import (
    MethodHandler,
    RewrappingInterceptor,
    StreamBehaviour,
    UnaryBehaviour,
    iterate_response,
    rewrap,
)
from pacs_common.telemetry import configure_tracing, server_interceptors

log = logging.getLogger(__name__)


async def _abort_for(
    exc: BaseException, context: grpc.aio.ServicerContext[Any, Any], *, request_streaming: bool
) -> None:
    """Turn any exception into a gRPC status: domain errors keep their code, others INTERNAL.

    A domain error is an answer (NOT_FOUND, INVALID_ARGUMENT, UNAVAILABLE, ...). When the
    request is one message its status is set and the handler returns: raising it on through
    ``context.abort`` would make the OpenTelemetry interceptor record it as an exception,
    formatting a traceback for every NOT_FOUND, which under a burst of them costs more CPU than
    the calls themselves. A client-streaming call (storage Put) aborts instead: when the handler
    returns with a status while the client is still sending its stream, grpcio's client (1.85)
    loses that status and reports INTERNAL "Internal error from Core" in 1-7 % of calls, after
    an abort in 0.5-1 % (clients treat it as retriable, see
    :func:`pacs_common.errors.status_lost_in_transport`).
    """
    if not isinstance(exc, PacsError):
        log.exception("unexpected error in a gRPC handler", exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the service log")
    elif request_streaming:
        await context.abort(exc.code, exc.message)
    else:
        context.set_code(exc.code)
        context.set_details(exc.message)


_PASSTHROUGH = (grpc.aio.AbortError, asyncio.CancelledError)


def _map_unary(inner: UnaryBehaviour, request_streaming: bool) -> UnaryBehaviour:
    async def behaviour(request: Any, context: Any) -> Any:
        try:
            return await inner(request, context)
        except _PASSTHROUGH:
            raise
        except Exception as exc:
            await _abort_for(exc, context, request_streaming=request_streaming)

    return behaviour


def _map_stream(inner: Callable[[Any, Any], Any], request_streaming: bool) -> StreamBehaviour:
    async def behaviour(request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            async for item in iterate_response(inner, request, context):
                yield item
        except _PASSTHROUGH:
            raise
        except Exception as exc:
            await _abort_for(exc, context, request_streaming=request_streaming)

    return behaviour


class ErrorMappingInterceptor(RewrappingInterceptor):
    """The one place where exceptions become gRPC status codes (like pynetdicom's handler
    wrapper turning any exception into a DIMSE failure status)."""

    def wrap(
        self, handler: MethodHandler, handler_call_details: grpc.HandlerCallDetails
    ) -> MethodHandler:
        """``handler`` with every exception turned into a status."""
        streaming = bool(handler.request_streaming)
        return rewrap(
            handler,
            lambda inner: _map_unary(inner, streaming),
            lambda inner: _map_stream(inner, streaming),
        )


def build_server(
    register: Callable[[grpc.aio.Server], None],
    service_names: Iterable[str],
    interceptors: Iterable[Any] = (),
) -> tuple[grpc.aio.Server, HealthServicer]:
    """Create a server with health, reflection and error mapping; ``register`` adds servicers.

    Args:
        register: adds the service's own servicers to the server.
        service_names: full names of those services, for health and reflection.
        interceptors: extra interceptors, run after error mapping.
    """
    names = list(service_names)
    # Every server continues its callers' traces; the provider is named after the first service.
    configure_tracing(names[0] if names else "cloudpacs")
    server = grpc.aio.server(
        interceptors=[*server_interceptors(), ErrorMappingInterceptor(), *interceptors],
        options=[
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.max_send_message_length", 16 * 1024 * 1024),
        ],
    )
    register(server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    # Health answers SERVICE_UNKNOWN until GrpcServerRunner.start() reports SERVING.
    return server, health_servicer


class GrpcServerRunner:
    """Runs one service's server until SIGTERM/SIGINT, then shuts down gracefully."""

    def __init__(
        self,
        server: grpc.aio.Server,
        health_servicer: HealthServicer,
        service_names: Iterable[str],
        grace_s: float = 10.0,
    ) -> None:
        self.server = server
        self.health = health_servicer
        self.service_names = ["", *service_names]
        self.grace_s = grace_s
        self._stopped = asyncio.Event()
        self._stopping = False

    def bind(self, host: str, port: int) -> int:
        """Bind an insecure port (mTLS comes from the mesh or a later issue); returns the port."""
        bound = self.server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise SystemExit(f"cannot bind gRPC port {host}:{port}; is it already in use?")
        return bound

    async def start(self) -> None:
        """Start serving and report SERVING."""
        await self.server.start()
        for name in self.service_names:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self) -> None:
        """NOT_SERVING, then stop with the grace period; safe to call twice."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        for name in self.service_names:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(self.grace_s)
        self._stopped.set()

    async def run_until_signalled(
        self, cleanup: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Serve until SIGTERM or SIGINT; then stop and run ``cleanup`` (flush, commit, close)."""
        loop = asyncio.get_running_loop()
        signalled = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signalled.set)
        await signalled.wait()
        log.info("shutting down")
        await self.stop()
        if cleanup is not None:
            await cleanup()

"""gRPC server bootstrap shared by every service.

:func:`build_server` returns a ``grpc.aio`` server with the error-mapping interceptor, the
standard health service (``grpc.health.v1``) and reflection. Services do not call it
themselves: :class:`pacs_common.service_host.ServiceHost` builds, binds (mutual TLS), starts and
stops it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
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
    authorization: Iterable[Any] = (),
) -> tuple[grpc.aio.Server, HealthServicer]:
    """Create a server with health, reflection and error mapping; ``register`` adds servicers.

    Args:
        register: adds the service's own servicers to the server.
        service_names: full names of those services, for health and reflection.
        interceptors: extra interceptors, run after error mapping.
        authorization: interceptors that refuse callers, run before error mapping (their
            refusals are answers, not errors of the handler).
    """
    names = list(service_names)
    # Every server continues its callers' traces; the provider is named after the first service.
    configure_tracing(names[0] if names else "cloudpacs")
    server = grpc.aio.server(
        interceptors=[
            *server_interceptors(),
            *authorization,
            ErrorMappingInterceptor(),
            *interceptors,
        ],
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
    # Health answers SERVICE_UNKNOWN until ServiceHost.start() reports SERVING.
    return server, health_servicer

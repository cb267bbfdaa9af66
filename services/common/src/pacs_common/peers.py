"""Which services may call which: authorization of the peer's certificate identity, per call.

The TLS handshake (:mod:`pacs_common.tls`) already refused every caller without a certificate
from the CA; this interceptor then reads the caller's identity (the certificate's subject common
name, ``x509_common_name`` in gRPC's auth context) and refuses a call from an identity outside
the service's allowed set with PERMISSION_DENIED, before the handler runs. Health and reflection
answer every CA-signed peer: Kubernetes probes and operators' tools carry a certificate of their
own, not one of the allowed identities.

Servicers that want the caller's identity read it with :func:`peer_identity`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from pacs_common.grpc_handlers import (
    MethodHandler,
    RewrappingInterceptor,
    StreamBehaviour,
    UnaryBehaviour,
    iterate_response,
    rewrap,
)

log = logging.getLogger(__name__)

# Services every CA-signed peer may call (probes, grpcurl/grpc_health_probe with a certificate).
OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


def peer_identity(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The caller's identity: its certificate's common name (None without mutual TLS)."""
    names = list(context.auth_context().get("x509_common_name") or [])
    return names[0].decode(errors="replace") if names else None


def _service_of(method: str) -> str:
    """``pacs.storage.v1.StorageService`` of ``/pacs.storage.v1.StorageService/Put``."""
    return method.lstrip("/").split("/", 1)[0]


class PeerAuthorizationInterceptor(RewrappingInterceptor):
    """Refuses, with PERMISSION_DENIED and without running the handler, every call from a peer
    whose identity is not in ``allowed`` (except to :data:`OPEN_SERVICES`)."""

    def __init__(self, allowed: Iterable[str], open_services: Iterable[str] = OPEN_SERVICES):
        self.allowed = frozenset(allowed)
        self.open_services = frozenset(open_services)

    def wrap(
        self, handler: MethodHandler, handler_call_details: grpc.HandlerCallDetails
    ) -> MethodHandler:
        """``handler`` behind the check of the caller's identity."""
        method = handler_call_details.method
        if _service_of(method) in self.open_services:
            return handler
        check = self._check

        def unary(inner: UnaryBehaviour) -> UnaryBehaviour:
            async def behaviour(request: Any, context: Any) -> Any:
                await check(context, method)
                return await inner(request, context)

            return behaviour

        def stream(inner: Callable[[Any, Any], Any]) -> StreamBehaviour:
            async def behaviour(request: Any, context: Any) -> Any:
                await check(context, method)
                async for item in iterate_response(inner, request, context):
                    yield item

            return behaviour

        return rewrap(handler, unary, stream)

    async def _check(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
        peer = peer_identity(context)
        if peer is not None and peer in self.allowed:
            return
        # The identity and the method name only: never anything of the request.
        log.warning("call refused: peer not allowed", extra={"peer": peer, "method": method})
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"identity {peer or '(none)'} may not call {_service_of(method)}",
        )

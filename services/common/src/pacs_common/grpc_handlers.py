"""Rebuild a gRPC method handler around its behaviour, for server interceptors.

grpc.aio gives an interceptor the method's handler, whose behaviour sits in one of four slots
(unary or stream in, unary or stream out) with a factory of its own each. Interceptors here only
care whether the *response* is one message or a stream, so they supply two wrappers and this
module puts the wrapped behaviour back in the right slot. grpcio has no helper for this.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

MethodHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
UnaryBehaviour: TypeAlias = Callable[[Any, Any], Awaitable[Any]]
StreamBehaviour: TypeAlias = Callable[[Any, Any], AsyncIterator[Any]]


async def iterate_response(inner: Callable[[Any, Any], Any], request: Any, context: Any) -> Any:
    """Yield a streaming handler's messages, whether it is an async generator or a coroutine
    that writes with ``await context.write(...)``."""
    result = inner(request, context)
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    else:
        await result


def rewrap(
    handler: MethodHandler,
    unary: Callable[[UnaryBehaviour], UnaryBehaviour],
    stream: Callable[[Callable[[Any, Any], Any]], StreamBehaviour],
) -> MethodHandler:
    """``handler`` with its behaviour wrapped by ``unary`` (one response message) or
    ``stream`` (a response stream), in the slot it came from."""
    codec = (handler.request_deserializer, handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), *codec)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), *codec)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), *codec)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream), *codec)
    return handler


class RewrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """A server interceptor that rebuilds every method handler with :meth:`wrap`."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return self.wrap(handler, handler_call_details)

    def wrap(
        self, handler: MethodHandler, handler_call_details: grpc.HandlerCallDetails
    ) -> MethodHandler:
        """``handler`` wrapped (with :func:`rewrap`)."""
        raise NotImplementedError

"""OpenTelemetry: the tracer provider, gRPC instrumentation, and W3C trace-context propagation
through Kafka record headers, so that one C-STORE is one trace from the gateway through storage
and Kafka to the indexer."""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from pacs_common.trace_redaction import RedactingSpanProcessor


def configure_tracing(service: str) -> None:
    """Install an SDK tracer provider naming ``service``, unless one is installed already
    (by an earlier call, or by a test with an in-memory exporter).

    Spans are exported over OTLP when the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; otherwise they only propagate context.
    """
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,  # imported only when exporting: it opens a gRPC channel
        )

        # Spans leave the process only through the redaction of patient data.
        provider.add_span_processor(RedactingSpanProcessor(BatchSpanProcessor(OTLPSpanExporter())))
    trace.set_tracer_provider(provider)


def server_interceptors() -> list[Any]:
    """Interceptors that continue the caller's trace in a gRPC server span."""
    return [aio_server_interceptor()]  # type: ignore[no-untyped-call]


def client_interceptors() -> list[Any]:
    """Interceptors that open a client span and send its context with each gRPC call."""
    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]


def inject_headers() -> list[tuple[str, bytes]]:
    """The current trace context as Kafka headers (``traceparent``, ``tracestate``)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(key, value.encode()) for key, value in carrier.items()]


def extract_context(headers: list[tuple[str, bytes]] | None) -> context.Context:
    """The trace context carried by Kafka headers, to parent the consumer's span."""
    carrier = {key: value.decode(errors="replace") for key, value in headers or []}
    return propagate.extract(carrier)

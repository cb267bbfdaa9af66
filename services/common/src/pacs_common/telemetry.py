"""OpenTelemetry set-up and W3C trace-context propagation through Kafka record headers."""

from __future__ import annotations

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

_configured = False


def configure_tracing(service: str) -> None:
    """Install a tracer provider naming ``service``; exporters are added by deployment config."""
    global _configured  # noqa: PLW0603  (process-wide, like OpenTelemetry's own provider)
    if _configured:
        return
    trace.set_tracer_provider(TracerProvider(resource=Resource.create({"service.name": service})))
    _configured = True


def inject_headers() -> list[tuple[str, bytes]]:
    """The current trace context as Kafka headers (``traceparent``, ``tracestate``)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(key, value.encode()) for key, value in carrier.items()]


def extract_context(headers: list[tuple[str, bytes]] | None) -> context.Context:
    """The trace context carried by Kafka headers, to parent the consumer's span."""
    carrier = {key: value.decode(errors="replace") for key, value in headers or []}
    return propagate.extract(carrier)

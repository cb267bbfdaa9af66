"""Keep patient data out of exported traces.

gRPC instrumentation copies a call's status details ("study 1.2.… not found") into the span
status, and recorded exceptions carry their message and traceback as event attributes. Every
span therefore passes through :class:`RedactingSpanProcessor` before any exporter sees it, and
leaves with the same UID scrubbing as the logs (:func:`pacs_common.logging.redact_uids`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import Status

from pacs_common.logging import redact_uids


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_uids(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_value(item) for item in value)
    return value


def _redact_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {key: _redact_value(value) for key, value in (attributes or {}).items()}


def redacted_span(span: ReadableSpan) -> ReadableSpan:
    """A copy of ``span`` whose name, attributes, events and status carry no instance UID."""
    status = span.status
    if status.description:
        status = Status(status.status_code, redact_uids(status.description))
    return ReadableSpan(
        name=redact_uids(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_redact_attributes(span.attributes),
        events=[
            Event(event.name, _redact_attributes(event.attributes), event.timestamp)
            for event in span.events
        ],
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingSpanProcessor(SpanProcessor):
    """Hands ``inner`` (the exporting processor) redacted copies of finished spans."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing is exported at start."""
        self.inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        """Pass on the redacted copy."""
        self.inner.on_end(redacted_span(span))

    def shutdown(self) -> None:
        """Flush and stop the inner processor."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the inner processor."""
        return self.inner.force_flush(timeout_millis)

"""Exported spans carry no instance-level UID, whatever the instrumentation copied into them."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from pacs_common.trace_redaction import RedactingSpanProcessor

STUDY_UID = "1.2.826.0.1.3680043.8.498.11223344556677889900"


def test_status_attributes_and_exception_events_are_redacted() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(RedactingSpanProcessor(SimpleSpanProcessor(exporter)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("/pacs.query.v1.QueryService/FindStudies") as span:
        span.set_attribute("rpc.method", "FindStudies")
        span.set_attribute("query", f"StudyInstanceUID={STUDY_UID}")
        span.record_exception(LookupError(f"study {STUDY_UID} not found"))
        span.set_status(Status(StatusCode.ERROR, f"NOT_FOUND: study {STUDY_UID} not found"))
    (exported,) = exporter.get_finished_spans()
    text = repr(
        (exported.name, dict(exported.attributes or {}), exported.status.description)
    ) + repr([dict(event.attributes or {}) for event in exported.events])
    assert STUDY_UID not in text
    assert exported.status.status_code is StatusCode.ERROR
    assert exported.attributes is not None
    assert exported.attributes["rpc.method"] == "FindStudies"
    assert "[redacted]" in str(exported.status.description)
    assert exported.events[0].name == "exception"

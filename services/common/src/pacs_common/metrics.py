"""Prometheus metrics of every cloudpacs service, defined once so names stay consistent.

Each service calls :func:`start_metrics_server` with its ``metrics_port`` setting
(``PACS_<SERVICE>_METRICS_PORT``) and adds :class:`GrpcMetricsInterceptor` to its gRPC server;
domain code imports the metric objects below
(for example ``DIMSE_OPERATIONS.labels(operation="C-STORE", status="success").inc()``).
The dashboards in ``infra/dashboards/`` and the alert rules in ``infra/prometheus/rules.yml``
query exactly these names: rename one here and there together.

Metric objects are process-wide, as Prometheus client libraries intend (one default registry per
process, scraped over HTTP); label values must stay low-cardinality, so never put a UID, a
tenant's patient data or an AE title from an unknown caller in a label.

A service that forks worker processes (the gateway's ``workers`` sharing the DICOM port) sets
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before starting them: every process then
records into files there, and :func:`start_metrics_server` in the parent exposes their sum
(prometheus_client's multiprocess mode). The parent must empty that directory at start-up.

Labelled series appear only once a label combination is first used, so a panel or alert on a
counter that has never moved (no failed C-STORE yet) would show "No data" rather than 0, and
``rate()`` misses the first increment. Where the label values are a closed set (below), every
combination is therefore created at import, at 0 (the Prometheus instrumentation practice);
:func:`init_consumer_metrics` does the same for one consumer's group and topics.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from pacs_common.errors import PacsError
from pacs_common.grpc_handlers import (
    MethodHandler,
    RewrappingInterceptor,
    StreamBehaviour,
    UnaryBehaviour,
    iterate_response,
    rewrap,
)

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
if _multiproc_dir := os.environ.get(MULTIPROC_DIR_ENV):
    # Metrics without labels create their value file on definition, just below.
    os.makedirs(_multiproc_dir, exist_ok=True)

# Latency buckets (seconds): sub-millisecond lookups up to minute-long streamed instances.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# --- gRPC (every service) -------------------------------------------------------------------

GRPC_SERVER_REQUESTS = Counter(
    "pacs_grpc_server_requests",
    "gRPC calls handled by the server, by service, method and final status code.",
    ["service", "method", "code"],
)
GRPC_SERVER_REQUEST_DURATION = Histogram(
    "pacs_grpc_server_request_duration_seconds",
    "Time from the start of a gRPC call to its last response message or status.",
    ["service", "method"],
    buckets=_LATENCY_BUCKETS,
)

# --- DICOM (gateway) ------------------------------------------------------------------------

DICOM_ASSOCIATIONS_OPEN = Gauge(
    "pacs_dicom_associations_open",
    "DICOM associations currently established with the gateway.",
    multiprocess_mode="livesum",  # workers' associations add up; dead workers hold none
)
ASSOCIATION_REJECT_REASONS = (
    "unknown_calling_ae",
    "unknown_called_ae",
    "address_not_allowed",
    "tls_identity",
    "limit",
    "other",
)
"""Values of ``reason`` on :data:`DICOM_ASSOCIATIONS_REJECTED`."""
DICOM_ASSOCIATIONS_REJECTED = Counter(
    "pacs_dicom_associations_rejected",
    "Association requests rejected (PS3.8 9.3.4), by reason "
    "(unknown_calling_ae, unknown_called_ae, address_not_allowed, tls_identity, limit, other).",
    ["reason"],
)
DIMSE_SCP_OPERATIONS = ("C-ECHO", "C-STORE", "C-FIND", "C-MOVE", "C-GET")
"""The DIMSE services the gateway answers as SCP (PS3.7 9.1)."""
DIMSE_STATUS_CLASSES = ("success", "warning", "failure", "cancel")
"""Final status classes of a DIMSE response (PS3.7 C.1); pending responses are not counted."""
DIMSE_OPERATIONS = Counter(
    "pacs_dimse_operations",
    "DIMSE operations served (C-ECHO, C-STORE, C-FIND, ...), by outcome status class "
    "(success, warning, failure, cancel).",
    ["operation", "status"],
)
DICOM_CSTORE_BYTES = Counter(
    "pacs_dicom_cstore_bytes",
    "Encoded dataset bytes received by C-STORE and accepted.",
)
DICOM_CSTORE_DURATION = Histogram(
    "pacs_dicom_cstore_duration_seconds",
    "Time to handle one C-STORE request, from the dataset received to the response status.",
    buckets=_LATENCY_BUCKETS,
)

# --- Kafka (producers and consumers) --------------------------------------------------------

KAFKA_PRODUCE_DURATION = Histogram(
    "pacs_kafka_produce_duration_seconds",
    "Time until the brokers acknowledged a published event (acks=all).",
    ["topic"],
    buckets=_LATENCY_BUCKETS,
)
KAFKA_CONSUMER_LAG = Gauge(
    "pacs_kafka_consumer_lag",
    "Records behind the partition's end offset, as seen by this consumer.",
    ["group", "topic", "partition"],
    multiprocess_mode="livemax",
)
CONSUMER_OUTCOMES = ("ok", "retried", "dead_lettered", "skipped")
"""Values of ``outcome`` on :data:`KAFKA_EVENTS_CONSUMED`."""
KAFKA_EVENTS_CONSUMED = Counter(
    "pacs_kafka_events_consumed",
    "Events handled by a consumer, by outcome (ok, retried, dead_lettered, skipped).",
    ["group", "topic", "outcome"],
)

# --- Audit (every service emits; the audit service stores and exports) ---------------------

AUDIT_EVENTS_EMITTED = Counter(
    "pacs_audit_events_emitted", "Audit events queued for publishing.", ["source"]
)
AUDIT_EVENTS_PUBLISHED = Counter(
    "pacs_audit_events_published", "Audit events the brokers acknowledged.", ["source"]
)
AUDIT_DROP_REASONS = ("queue_full", "stopped")
"""Values of ``reason`` on :data:`AUDIT_EVENTS_DROPPED`."""
AUDIT_EVENTS_DROPPED = Counter(
    "pacs_audit_events_dropped",
    "Audit events lost: the in-memory queue was full (Kafka down for long) or the service "
    "stopped before they were published.",
    ["source", "reason"],
)
AUDIT_QUEUE_DEPTH = Gauge(
    "pacs_audit_queue_depth",
    "Audit events waiting in memory to be published.",
    multiprocess_mode="livesum",
)
AUDIT_EXPORTED = Counter("pacs_audit_exported", "Audit records sent to the syslog collector.")
AUDIT_EXPORT_FAILURES = Counter(
    "pacs_audit_export_failures", "Attempts to reach the syslog collector that failed."
)
AUDIT_EXPORT_BACKLOG = Gauge(
    "pacs_audit_export_backlog",
    "Audit records waiting for the syslog collector.",
    multiprocess_mode="livemax",
)

# --- S3 (storage) ---------------------------------------------------------------------------

S3_REQUEST_DURATION = Histogram(
    "pacs_s3_request_duration_seconds",
    "Time of one S3 request (put_object, get_object, head_object, ...), successful or not.",
    ["operation"],
    buckets=_LATENCY_BUCKETS,
)
S3_OPERATIONS = (
    "head_bucket",
    "create_bucket",
    "head_object",
    "get_object",
    "put_object",
    "copy_object",
    "delete_object",
    "list_objects_v2",
    "create_multipart_upload",
    "upload_part",
    "complete_multipart_upload",
    "abort_multipart_upload",
)
"""The S3 API operations the storage service calls (values of ``operation``)."""
S3_ERRORS = Counter(
    "pacs_s3_errors",
    "S3 requests that failed after the client's retries, by operation.",
    ["operation"],
)

# --- Index (indexer) ------------------------------------------------------------------------

QUERY_RETRIEVE_LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
"""Values of ``level`` on :data:`INDEX_QUERY_DURATION` (PS3.4 C.6)."""
INDEX_QUERY_DURATION = Histogram(
    "pacs_index_query_duration_seconds",
    "Time of one index query, by query/retrieve level (PATIENT, STUDY, SERIES, IMAGE).",
    ["level"],
    buckets=_LATENCY_BUCKETS,
)

# --- De-identification (deid) ---------------------------------------------------------------

DEID_OUTCOMES = ("ok", "refused", "failed")
"""Values of ``outcome`` on :data:`DEID_INSTANCES` (refused: bad input or burned-in text)."""
DEID_TRIGGERS = ("instance", "operation", "rule")
"""Values of ``trigger``: a streamed instance, a study operation, a routing rule."""
DEID_INSTANCES = Counter(
    "pacs_deid_instances",
    "Instances de-identified, by outcome and what asked for it.",
    ["outcome", "trigger"],
)
DEID_DURATION = Histogram(
    "pacs_deid_duration_seconds",
    "Time to de-identify one instance (parse, profile, pixels, write), by trigger.",
    ["trigger"],
    buckets=_LATENCY_BUCKETS,
)
DEID_MASKED_REGIONS = Counter(
    "pacs_deid_masked_regions",
    "Pixel regions masked under Clean Pixel Data, by reason (config, ocr).",
    ["reason"],
)
DEID_REIDENTIFICATIONS = Counter(
    "pacs_deid_reidentifications",
    "Reads of a re-identification map, by whether the pseudonym was found.",
    ["found"],
)

# --- Transcoding (transcoder) ---------------------------------------------------------------

TRANSCODE_DURATION = Histogram(
    "pacs_transcode_duration_seconds",
    "Time to transcode one object, by output transfer syntax.",
    ["transfer_syntax"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TRANSCODE_BYTES = Counter(
    "pacs_transcode_bytes",
    "Pixel bytes decoded (in) and object bytes written (out), by output transfer syntax.",
    ["transfer_syntax", "direction"],
)
TRANSCODE_FAILURES = Counter(
    "pacs_transcode_failures",
    "Transcodings refused or failed, by reason (the error class).",
    ["reason"],
)
POLICY_OUTCOMES = ("transcoded", "kept", "superseded", "gone", "not-encodable")
"""Values of ``outcome`` on :data:`TRANSCODE_POLICY_OUTCOMES`."""
TRANSCODE_POLICY_OUTCOMES = Counter(
    "pacs_transcode_policy_outcomes",
    "On-store policy decisions: transcoded, kept (no rule, or already right), superseded (a "
    "newer version exists), gone (deleted), not-encodable (the target cannot carry it).",
    ["outcome"],
)

# --- Known label combinations at 0 (see the module docstring) -------------------------------
# Counters, and the one histogram whose label set is small: an idle histogram adds a whole
# set of bucket series, so S3 latency per operation appears when the operation is first used.

for _reason in ASSOCIATION_REJECT_REASONS:
    DICOM_ASSOCIATIONS_REJECTED.labels(_reason)
for _operation in DIMSE_SCP_OPERATIONS:
    for _status in DIMSE_STATUS_CLASSES:
        DIMSE_OPERATIONS.labels(_operation, _status)
for _operation in S3_OPERATIONS:
    S3_ERRORS.labels(_operation)
for _outcome in DEID_OUTCOMES:
    for _trigger in DEID_TRIGGERS:
        DEID_INSTANCES.labels(_outcome, _trigger)
for _reason in ("config", "ocr"):
    DEID_MASKED_REGIONS.labels(_reason)
for _found in ("true", "false"):
    DEID_REIDENTIFICATIONS.labels(_found)
for _level in QUERY_RETRIEVE_LEVELS:
    INDEX_QUERY_DURATION.labels(_level)
for _outcome in POLICY_OUTCOMES:
    TRANSCODE_POLICY_OUTCOMES.labels(_outcome)


def init_consumer_metrics(group: str, topics: Iterable[str]) -> None:
    """Create the outcome counters of one consumer group at 0, so that "dead-lettered" reads 0
    (not "No data") until something is dead-lettered; call it when the consumer starts."""
    for topic in topics:
        for outcome in CONSUMER_OUTCOMES:
            KAFKA_EVENTS_CONSUMED.labels(group, topic, outcome)


@dataclass
class MetricsServer:
    """A running ``/metrics`` HTTP endpoint; :meth:`stop` is safe to call twice."""

    port: int
    _httpd: WSGIServer
    _thread: threading.Thread

    def stop(self) -> None:
        """Stop serving and wait for the server thread."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()


def start_metrics_server(
    port: int,
    host: str = "0.0.0.0",  # noqa: S104  (Prometheus scrapes from other pods)
    registry: CollectorRegistry = REGISTRY,
) -> MetricsServer:
    """Serve the Prometheus text exposition on ``http://host:port/metrics`` from a thread.

    Args:
        port: TCP port; 0 picks a free one (tests), read it back from the result.
        host: address to bind.
        registry: the registry to expose (the process-wide default unless testing).

    Returns:
        The running server, with the bound port.
    """
    if registry is REGISTRY and os.environ.get(MULTIPROC_DIR_ENV):
        # Expose what every process wrote, not only this one's values.
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    httpd, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(port=int(httpd.server_port), _httpd=httpd, _thread=thread)


def _split_method(full_method: str) -> tuple[str, str]:
    """``/pacs.storage.v1.StorageService/Put`` -> (``pacs.storage.v1.StorageService``, ``Put``)."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method or "unknown"


def _code_of(exc: BaseException | None, context: Any) -> grpc.StatusCode:
    """The status code the client will see for a call that returned or raised ``exc``."""
    if isinstance(exc, PacsError):
        # Raised inside the error-mapping interceptor, which turns it into exactly this code.
        return exc.code
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        # The client went away (or the deadline passed) while the handler was running.
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if exc is None:
        return grpc.StatusCode.OK
    if isinstance(exc, grpc.aio.AbortError):
        return grpc.StatusCode.UNKNOWN
    # Any other exception becomes INTERNAL in ErrorMappingInterceptor.
    return grpc.StatusCode.INTERNAL


class _CallRecorder:
    """Times one call and records its final code exactly once."""

    def __init__(self, service: str, method: str) -> None:
        self.service = service
        self.method = method
        self.started = time.perf_counter()

    def done(self, exc: BaseException | None, context: Any) -> None:
        code = _code_of(exc, context)
        GRPC_SERVER_REQUESTS.labels(self.service, self.method, code.name).inc()
        GRPC_SERVER_REQUEST_DURATION.labels(self.service, self.method).observe(
            time.perf_counter() - self.started
        )


def _instrument(handler: MethodHandler, service: str, method: str) -> MethodHandler:
    """Time and count the call, whichever of the four kinds it is."""

    def unary(inner: UnaryBehaviour) -> UnaryBehaviour:
        async def behaviour(request: Any, context: Any) -> Any:
            recorder = _CallRecorder(service, method)
            try:
                response = await inner(request, context)
            except BaseException as exc:
                recorder.done(exc, context)
                raise
            recorder.done(None, context)
            return response

        return behaviour

    def stream(inner: Callable[[Any, Any], Any]) -> StreamBehaviour:
        async def behaviour(request: Any, context: Any) -> AsyncIterator[Any]:
            recorder = _CallRecorder(service, method)
            try:
                async for item in iterate_response(inner, request, context):
                    yield item
            except BaseException as exc:
                recorder.done(exc, context)
                raise
            recorder.done(None, context)

        return behaviour

    return rewrap(handler, unary, stream)


class GrpcMetricsInterceptor(RewrappingInterceptor):
    """Counts and times every call: ``pacs_grpc_server_requests_total{service,method,code}`` and
    ``pacs_grpc_server_request_duration_seconds{service,method}``.

    Pass it to :func:`pacs_common.grpc_server.build_server` (``interceptors=[...]``): it then runs
    inside the error-mapping interceptor and records the code that interceptor will send.
    """

    def wrap(
        self, handler: MethodHandler, handler_call_details: grpc.HandlerCallDetails
    ) -> MethodHandler:
        """``handler`` timed and counted under its service and method names."""
        service, method = _split_method(handler_call_details.method)
        return _instrument(handler, service, method)


STORAGE_UNANNOUNCED = Gauge(
    "pacs_storage_unannounced_changes",
    "Writes or deletes older than the reconcile delay and not yet announced, as of the last "
    "reconciler pass (stored but not yet visible)",
)
STORAGE_OLDEST_UNANNOUNCED = Gauge(
    "pacs_storage_oldest_unannounced_seconds",
    "Age of the oldest change not yet announced at the last reconciler pass (0: none)",
)
STORAGE_RECONCILED = Counter(
    "pacs_storage_reconciled_total",
    "Changes the reconciler settled, by outcome (write-announced, write-not-made, "
    "delete-announced, delete-not-made, foreign)",
    ["outcome"],
)

# --- Routing between facilities (router) -----------------------------------------------------

ROUTE_ENQUEUED = Counter(
    "pacs_route_enqueued",
    "Instances a routing rule put on a destination's queue (pacs.route.<destination>.v1).",
    ["destination"],
)
ROUTE_SENT = Counter(
    "pacs_route_sent",
    "Instances a destination accepted (C-STORE success or warning, STOW-RS 200/202).",
    ["destination"],
)
ROUTE_FAILED = Counter(
    "pacs_route_failed",
    "Instances a destination refused for good, sent to the sender's dead-letter topic.",
    ["destination"],
)
ROUTE_RETRIES = Counter(
    "pacs_route_retries",
    "Send attempts that failed and will be retried (destination down, out of resources).",
    ["destination"],
)
ROUTE_QUEUED = Gauge(
    "pacs_route_queued",
    "Instances waiting in a destination's queue (its sender group's consumer lag).",
    ["destination"],
)
ROUTE_LAST_SUCCESS = Gauge(
    "pacs_route_last_success_timestamp_seconds",
    "Unix time a destination last accepted an instance (0: never since start).",
    ["destination"],
)
ROUTE_SEND_DURATION = Histogram(
    "pacs_route_send_duration_seconds",
    "Time to send one instance to a destination, reading it from storage included.",
    ["destination"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ROUTE_PREFETCHED = Counter(
    "pacs_route_prefetched_studies",
    "Prior studies prefetched from a remote archive on an order, by outcome (moved, failed).",
    ["outcome"],
)

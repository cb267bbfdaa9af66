"""The cloudpacs Grafana dashboards, on the metric names of ``pacs_common.metrics``.

Five boards: ingest overview (what the sites see), per-service health (gRPC), Kafka lag
(the event pipeline), storage (S3), the transcoder (conversions, on-store policy) and
de-identification. ``component`` is the label the chart's ServiceMonitor sets (storage,
indexer, gateway, ...).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.models.dashboard import Dashboard, VariableRefresh, VariableSort
from panels import DATASOURCE, NS, graph, new_dashboard, query, row, single

RATE = "$__rate_interval"
SERVER_ERRORS = 'code=~"UNKNOWN|INTERNAL|UNAVAILABLE|DATA_LOSS|DEADLINE_EXCEEDED|UNIMPLEMENTED"'
STORAGE_SERVICE = 'service="pacs.storage.v1.StorageService"'
CSTORE = f'{NS},operation="C-STORE"'
# One series per partition: a consumer may still export a partition it lost in a rebalance.
LAG_BY_PARTITION = f"max by (group, topic, partition) (pacs_kafka_consumer_lag{{{NS}}})"


def error_ratio(metric: str, errors: str, selector: str, window: str, by: str = "") -> str:
    """Share of ``metric`` (a counter) whose samples match ``errors``, per ``by``.

    Without any error the numerator has no series and a plain division would show "No data";
    ``or ... * 0`` makes it 0 wherever there is traffic.
    """
    grouping = f"sum by ({by})" if by else "sum"
    part = f"{grouping} (rate({metric}{{{selector},{errors}}}[{window}]))"
    whole = f"{grouping} (rate({metric}{{{selector}}}[{window}]))"
    return f"({part} or {whole} * 0) / {whole}"


def quantiles(metric: str, by: str, selector: str = NS) -> list[prometheus.Dataquery]:
    """p50/p95/p99 of a histogram, per ``by`` label (empty for one overall series)."""
    group = f"{by}, le" if by else "le"
    legend_prefix = f"{{{{{by}}}}} " if by else ""
    return [
        query(
            f"histogram_quantile({q}, sum by ({group}) "
            f"(rate({metric}_bucket{{{selector}}}[{RATE}])))",
            f"{legend_prefix}p{int(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def ingest_overview() -> Dashboard:
    """What the imaging sites experience: images in, failures, rejections, delay to query."""
    return (
        new_dashboard(
            "cloudpacs-ingest",
            "cloudpacs / Ingest overview",
            "DICOM ingest end to end: associations, C-STORE outcomes and latency, throughput, "
            "and how far indexing lags behind.",
        )
        .with_row(row("Now"))
        .with_panel(
            single(
                "Images stored / s",
                "C-STOREs answered with Success (only after the image is durable and announced).",
                "ops",
                f'sum(rate(pacs_dimse_operations_total{{{CSTORE},status="success"}}[5m]))',
            )
        )
        .with_panel(
            single(
                "Ingest throughput",
                "Dataset bytes accepted by C-STORE.",
                "Bps",
                f"sum(rate(pacs_dicom_cstore_bytes_total{{{NS}}}[5m]))",
            )
        )
        .with_panel(
            single(
                "Open associations",
                "DICOM associations currently established with the gateway.",
                "short",
                f"sum(pacs_dicom_associations_open{{{NS}}})",
            )
        )
        .with_panel(
            single(
                "C-STORE failures",
                "Share of C-STOREs answered with a failure status (senders keep and retry them).",
                "percentunit",
                f'sum(rate(pacs_dimse_operations_total{{{CSTORE},status="failure"}}[5m])) '
                f"/ sum(rate(pacs_dimse_operations_total{{{CSTORE}}}[5m]))",
                thresholds=[(None, "green"), (0.001, "orange"), (0.01, "red")],
            )
        )
        .with_panel(
            single(
                "Rejected associations (1h)",
                "Association requests refused at association time (unknown AE, network, TLS).",
                "short",
                f"sum(increase(pacs_dicom_associations_rejected_total{{{NS}}}[1h]))",
                thresholds=[(None, "green"), (1, "orange"), (50, "red")],
            )
        )
        .with_panel(
            single(
                "Events waiting",
                "Events not yet handled by their consumers, all groups (indexing delay).",
                "short",
                f"sum({LAG_BY_PARTITION})",
                thresholds=[(None, "green"), (1000, "orange"), (10000, "red")],
            )
        )
        .with_row(row("DICOM"))
        .with_panel(
            graph(
                "C-STORE by status",
                "C-STORE responses per second by status class.",
                "ops",
                query(
                    f"sum by (status) (rate(pacs_dimse_operations_total{{{CSTORE}}}[{RATE}]))",
                    "{{status}}",
                ),
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "C-STORE latency",
                "From the dataset received to the response status, including storage.Put.",
                "s",
                *quantiles("pacs_dicom_cstore_duration_seconds", ""),
            )
        )
        .with_panel(
            graph(
                "Ingest throughput by pod",
                "Dataset bytes accepted per second, per gateway pod.",
                "Bps",
                query(
                    f"sum by (pod) (rate(pacs_dicom_cstore_bytes_total{{{NS}}}[{RATE}]))",
                    "{{pod}}",
                ),
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "DIMSE operations",
                "Every DIMSE service by operation and status.",
                "ops",
                query(
                    f"sum by (operation, status) "
                    f"(rate(pacs_dimse_operations_total{{{NS}}}[{RATE}]))",
                    "{{operation}} {{status}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Open associations by pod",
                "Associations held per gateway pod; compare with maxAssociations.",
                "short",
                query(f"sum by (pod) (pacs_dicom_associations_open{{{NS}}})", "{{pod}}"),
            )
        )
        .with_panel(
            graph(
                "Rejected associations by reason",
                "A-ASSOCIATE-RJ sent per second (PS3.8 9.3.4).",
                "ops",
                query(
                    f"sum by (reason) "
                    f"(rate(pacs_dicom_associations_rejected_total{{{NS}}}[{RATE}]))",
                    "{{reason}}",
                ),
            )
        )
        .with_row(row("Pipeline"))
        .with_panel(
            graph(
                "storage writes (CommitWrite, Put) outcomes",
                "The gateway's writes to the storage service (CommitWrite after a granted PUT, "
                "Put when streamed), by gRPC status code.",
                "reqps",
                query(
                    f"sum by (code) (rate(pacs_grpc_server_requests_total"
                    f'{{{NS},{STORAGE_SERVICE},method=~"CommitWrite|Put"}}[{RATE}]))',
                    "{{code}}",
                ),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Event publish latency",
                "Until Kafka acknowledged InstanceStored (acks=all), p95 per topic.",
                "s",
                query(
                    f"histogram_quantile(0.95, sum by (topic, le) "
                    f"(rate(pacs_kafka_produce_duration_seconds_bucket{{{NS}}}[{RATE}])))",
                    "{{topic}} p95",
                ),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Events waiting by consumer group",
                "Consumer lag summed over partitions: images not yet queryable.",
                "short",
                query(f"sum by (group, topic) ({LAG_BY_PARTITION})", "{{group}} {{topic}}"),
                width=8,
            )
        )
        .build()
    )


def service_health() -> Dashboard:
    """gRPC traffic, errors and latency of every service, and the pods behind them."""
    selector = f'{NS},service=~"$service"'
    return (
        new_dashboard(
            "cloudpacs-services",
            "cloudpacs / Service health",
            "gRPC requests, server-side errors and latency per service and method, pod "
            "resources, and index query latency.",
        )
        .with_variable(
            dash.QueryVariable("service")
            .label("gRPC service")
            .datasource(DATASOURCE)
            .query(f"label_values(pacs_grpc_server_requests_total{{{NS}}}, service)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_row(row("Now"))
        .with_panel(
            single(
                "Requests / s",
                "gRPC calls handled, all selected services.",
                "reqps",
                f"sum(rate(pacs_grpc_server_requests_total{{{selector}}}[5m]))",
                width=6,
            )
        )
        .with_panel(
            single(
                "Server errors",
                "Share of calls ending UNKNOWN, INTERNAL, UNAVAILABLE, DATA_LOSS, "
                "DEADLINE_EXCEEDED or UNIMPLEMENTED.",
                "percentunit",
                error_ratio("pacs_grpc_server_requests_total", SERVER_ERRORS, selector, "5m"),
                thresholds=[(None, "green"), (0.01, "orange"), (0.05, "red")],
                width=6,
            )
        )
        .with_panel(
            single(
                "p99 latency",
                "99th percentile of call duration, all selected services.",
                "s",
                f"histogram_quantile(0.99, sum by (le) "
                f"(rate(pacs_grpc_server_request_duration_seconds_bucket{{{selector}}}[5m])))",
                width=6,
            )
        )
        .with_panel(
            single(
                "Pods up",
                "Scrape targets answering, all components.",
                "short",
                f'sum(up{{{NS},component=~".+"}})',
                thresholds=[(None, "red"), (1, "green")],
                width=6,
            )
        )
        .with_row(row("gRPC"))
        .with_panel(
            graph(
                "Requests by method",
                "Calls per second per service and method.",
                "reqps",
                query(
                    f"sum by (service, method) "
                    f"(rate(pacs_grpc_server_requests_total{{{selector}}}[{RATE}]))",
                    "{{service}}/{{method}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Non-OK responses by code",
                "Every status but OK: caller errors (INVALID_ARGUMENT, NOT_FOUND...) and "
                "server errors alike.",
                "reqps",
                query(
                    f"sum by (service, code) "
                    f'(rate(pacs_grpc_server_requests_total{{{selector},code!="OK"}}[{RATE}]))',
                    "{{service}} {{code}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Server error ratio",
                "Share of calls ending with a server-side error; the alert fires above 5%.",
                "percentunit",
                query(
                    error_ratio(
                        "pacs_grpc_server_requests_total", SERVER_ERRORS, selector, RATE, "service"
                    ),
                    "{{service}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Latency p95 by method",
                "95th percentile of call duration (streams: until the last message).",
                "s",
                query(
                    f"histogram_quantile(0.95, sum by (service, method, le) "
                    f"(rate(pacs_grpc_server_request_duration_seconds_bucket"
                    f"{{{selector}}}[{RATE}])))",
                    "{{service}}/{{method}}",
                ),
            )
        )
        .with_row(row("Pods"))
        .with_panel(
            graph(
                "Resident memory",
                "Per pod; compare with the component's memory limit.",
                "bytes",
                query(
                    f"sum by (component, pod) "
                    f'(process_resident_memory_bytes{{{NS},component=~".+"}})',
                    "{{pod}}",
                ),
                width=8,
            )
        )
        .with_panel(
            graph(
                "CPU",
                "Cores used per pod.",
                "short",
                query(
                    f"sum by (component, pod) "
                    f'(rate(process_cpu_seconds_total{{{NS},component=~".+"}}[{RATE}]))',
                    "{{pod}}",
                ),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Index query latency",
                "QueryService lookups in the index database, p95 by query/retrieve level.",
                "s",
                query(
                    f"histogram_quantile(0.95, sum by (level, le) "
                    f"(rate(pacs_index_query_duration_seconds_bucket{{{NS}}}[{RATE}])))",
                    "{{level}} p95",
                ),
                width=8,
            )
        )
        .build()
    )


def kafka_lag() -> Dashboard:
    """The event pipeline: consumer lag, handling outcomes, dead letters, publish latency."""
    lag = f'max by (group, topic, partition) (pacs_kafka_consumer_lag{{{NS},group=~"$group"}})'
    consumed = f'{NS},group=~"$group"'
    return (
        new_dashboard(
            "cloudpacs-kafka",
            "cloudpacs / Kafka lag",
            "Consumer lag per group, topic and partition, how events are handled (ok, "
            "retried, dead-lettered) and how long publishing takes.",
        )
        .with_variable(
            dash.QueryVariable("group")
            .label("Consumer group")
            .datasource(DATASOURCE)
            .query(f"label_values(pacs_kafka_consumer_lag{{{NS}}}, group)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_row(row("Now"))
        .with_panel(
            single(
                "Events waiting",
                "Lag summed over the selected groups' partitions.",
                "short",
                f"sum({lag})",
                thresholds=[(None, "green"), (1000, "orange"), (10000, "red")],
                width=6,
            )
        )
        .with_panel(
            single(
                "Handled / s",
                "Events handled successfully per second.",
                "ops",
                f'sum(rate(pacs_kafka_events_consumed_total{{{consumed},outcome="ok"}}[5m]))',
                width=6,
            )
        )
        .with_panel(
            single(
                "Time to catch up",
                "Events waiting divided by the handling rate.",
                "s",
                f"sum({lag}) / sum(rate(pacs_kafka_events_consumed_total"
                f'{{{consumed},outcome="ok"}}[5m]))',
                thresholds=[(None, "green"), (300, "orange"), (1800, "red")],
                width=6,
            )
        )
        .with_panel(
            single(
                "Dead-lettered (24h)",
                "Events that failed every retry and went to a dead-letter topic.",
                "short",
                f"sum(increase(pacs_kafka_events_consumed_total"
                f'{{{consumed},outcome="dead_lettered"}}[24h]))',
                thresholds=[(None, "green"), (1, "red")],
                width=6,
            )
        )
        .with_row(row("Lag"))
        .with_panel(
            graph(
                "Lag by group and topic",
                "Events not yet handled; the alert fires above 1000 for 10 minutes.",
                "short",
                query(f"sum by (group, topic) ({lag})", "{{group}} {{topic}}"),
            )
        )
        .with_panel(
            graph(
                "Lag by partition",
                "One hot partition means one busy study key (events are keyed by study).",
                "short",
                query(lag, "{{group}} {{topic}}[{{partition}}]"),
            )
        )
        .with_row(row("Handling"))
        .with_panel(
            graph(
                "Events by outcome",
                "ok, retried, dead_lettered or skipped, per group and topic.",
                "ops",
                query(
                    f"sum by (group, topic, outcome) "
                    f"(rate(pacs_kafka_events_consumed_total{{{consumed}}}[{RATE}]))",
                    "{{group}} {{topic}} {{outcome}}",
                ),
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Publish latency",
                "Until the brokers acknowledged an event (acks=all), per topic.",
                "s",
                *quantiles("pacs_kafka_produce_duration_seconds", "topic"),
            )
        )
        .with_panel(
            graph(
                "Events published",
                "Events published per second, per topic.",
                "ops",
                query(
                    f"sum by (topic) "
                    f"(rate(pacs_kafka_produce_duration_seconds_count{{{NS}}}[{RATE}]))",
                    "{{topic}}",
                ),
                width=24,
            )
        )
        .with_row(row("Dead letters"))
        .with_panel(
            graph(
                "Dead letters per group",
                "Events each group sent to its dead-letter topic, per hour. They wait there "
                "until an operator replays or drops them: `pacs dlq list`, then `pacs dlq "
                "replay` once the cause is fixed (docs/operations.md, Dead letters).",
                "short",
                query(
                    f"sum by (group) (increase(pacs_kafka_events_consumed_total"
                    f'{{{consumed},outcome="dead_lettered"}}[1h]))',
                    "{{group}}",
                ),
                width=24,
            )
        )
        .with_row(row("Audit events"))
        .with_panel(
            graph(
                "Audit events",
                "Queued, acknowledged by Kafka, and dropped (queue full while Kafka was down, "
                "or unpublished at stop): any drop is a gap in the audit trail.",
                "ops",
                query(
                    f"sum by (source) (rate(pacs_audit_events_emitted_total{{{NS}}}[{RATE}]))",
                    "queued {{source}}",
                ),
                query(
                    f"sum by (source) (rate(pacs_audit_events_published_total{{{NS}}}[{RATE}]))",
                    "published {{source}}",
                ),
                query(
                    f"sum by (source, reason) "
                    f"(rate(pacs_audit_events_dropped_total{{{NS}}}[{RATE}])) or vector(0)",
                    "DROPPED {{source}} {{reason}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Audit queue and syslog export",
                "Events in the services' memory queues; records waiting for the syslog "
                "collector; exported and failed attempts per second.",
                "short",
                query(f"sum(pacs_audit_queue_depth{{{NS}}})", "in memory"),
                query(f"max(pacs_audit_export_backlog{{{NS}}})", "export backlog"),
                query(f"sum(rate(pacs_audit_exported_total{{{NS}}}[{RATE}]))", "exported/s"),
                query(
                    f"sum(rate(pacs_audit_export_failures_total{{{NS}}}[{RATE}]))",
                    "collector failures/s",
                ),
            )
        )
        .build()
    )


def storage() -> Dashboard:
    """The storage service and its S3 traffic."""
    grpc_storage = f"{NS},{STORAGE_SERVICE}"
    return (
        new_dashboard(
            "cloudpacs-storage",
            "cloudpacs / Storage",
            "StorageService calls and the S3 requests behind them: rate, latency and errors "
            "after retries, per operation.",
        )
        .with_row(row("Now"))
        .with_panel(
            single(
                "S3 requests / s",
                "All S3 operations.",
                "reqps",
                f"sum(rate(pacs_s3_request_duration_seconds_count{{{NS}}}[5m]))",
                width=6,
            )
        )
        .with_panel(
            single(
                "S3 error ratio",
                "Requests failing after the client's retries.",
                "percentunit",
                f"sum(rate(pacs_s3_errors_total{{{NS}}}[5m])) "
                f"/ sum(rate(pacs_s3_request_duration_seconds_count{{{NS}}}[5m]))",
                thresholds=[(None, "green"), (0.01, "orange"), (0.1, "red")],
                width=6,
            )
        )
        .with_panel(
            single(
                "Write p95",
                "StorageService.CommitWrite (grants) and Put, until durable and announced.",
                "s",
                f"histogram_quantile(0.95, sum by (le) "
                f"(rate(pacs_grpc_server_request_duration_seconds_bucket"
                f'{{{grpc_storage},method=~"CommitWrite|Put"}}[5m])))',
                width=6,
            )
        )
        .with_panel(
            single(
                "Get p95",
                "StorageService.Get, until the last chunk is sent.",
                "s",
                f"histogram_quantile(0.95, sum by (le) "
                f"(rate(pacs_grpc_server_request_duration_seconds_bucket"
                f'{{{grpc_storage},method="Get"}}[5m])))',
                width=6,
            )
        )
        .with_row(row("StorageService"))
        .with_panel(
            graph(
                "Calls by method and code",
                "Put, Get, Head, Delete, List per second by gRPC status.",
                "reqps",
                query(
                    f"sum by (method, code) "
                    f"(rate(pacs_grpc_server_requests_total{{{grpc_storage}}}[{RATE}]))",
                    "{{method}} {{code}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Latency p95 by method",
                "95th percentile per StorageService method.",
                "s",
                query(
                    f"histogram_quantile(0.95, sum by (method, le) "
                    f"(rate(pacs_grpc_server_request_duration_seconds_bucket"
                    f"{{{grpc_storage}}}[{RATE}])))",
                    "{{method}}",
                ),
            )
        )
        .with_row(row("Self-repair"))
        .with_panel(
            graph(
                "Stored but not yet visible",
                "Writes and deletes older than the reconcile delay that are not announced yet "
                "(storage's intent records); the reconciler announces them on its next pass.",
                "short",
                query(
                    f"sum by (pod) (pacs_storage_unannounced_changes{{{NS}}})",
                    "{{pod}}",
                ),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Oldest not yet visible",
                "Age of the oldest unannounced change; the alert fires past 5 minutes.",
                "s",
                query(
                    f"max by (pod) (pacs_storage_oldest_unannounced_seconds{{{NS}}})",
                    "{{pod}}",
                ),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Changes repaired",
                "Intents the reconciler settled per second, by outcome: write-announced is "
                "a repair; write-not-made an abandoned grant.",
                "ops",
                query(
                    f"sum by (outcome) (rate(pacs_storage_reconciled_total{{{NS}}}[{RATE}]))"
                    " or vector(0)",
                    "{{outcome}}",
                ),
                width=8,
            )
        )
        .with_row(row("S3"))
        .with_panel(
            graph(
                "S3 requests by operation",
                "put_object, get_object, head_object, multipart parts...",
                "reqps",
                query(
                    f"sum by (operation) "
                    f"(rate(pacs_s3_request_duration_seconds_count{{{NS}}}[{RATE}]))",
                    "{{operation}}",
                ),
                width=8,
            )
        )
        .with_panel(
            graph(
                "S3 latency",
                "Per operation, successful or not.",
                "s",
                *quantiles("pacs_s3_request_duration_seconds", "operation"),
                width=8,
            )
        )
        .with_panel(
            graph(
                "S3 errors by operation",
                "Failures after the client's retries; each one fails a Put or a Get.",
                "reqps",
                query(
                    f"sum by (operation) (rate(pacs_s3_errors_total{{{NS}}}[{RATE}]))",
                    "{{operation}}",
                ),
                width=8,
            )
        )
        .build()
    )


def transcoder() -> Dashboard:
    """The transcoder: conversions by syntax, their latency and bytes, refusals, the policy."""
    return (
        new_dashboard(
            "cloudpacs-transcoder",
            "cloudpacs / Transcoder",
            "TranscodeService conversions (retrieve, DICOMweb, de-identification) and the "
            "on-store compression policy: rate, latency, bytes in and out, refusals.",
        )
        .with_row(row("Now"))
        .with_panel(
            single(
                "Transcodings / s",
                "Objects converted, every output syntax.",
                "ops",
                f"sum(rate(pacs_transcode_duration_seconds_count{{{NS}}}[5m]))",
                width=6,
            )
        )
        .with_panel(
            single(
                "Compression ratio",
                "Pixel bytes decoded over object bytes written, last hour.",
                "none",
                f'sum(rate(pacs_transcode_bytes_total{{{NS},direction="in"}}[1h])) '
                f'/ sum(rate(pacs_transcode_bytes_total{{{NS},direction="out"}}[1h]))',
                width=6,
            )
        )
        .with_panel(
            single(
                "Refused or failed / s",
                "Requests the transcoder refused (unreadable, not representable, lossy not "
                "allowed) or could not serve.",
                "ops",
                f"sum(rate(pacs_transcode_failures_total{{{NS}}}[5m])) or vector(0)",
                thresholds=[(None, "green"), (0.01, "orange"), (1, "red")],
                width=6,
            )
        )
        .with_panel(
            single(
                "Transcoded on store / s",
                "New versions written by the on-store policy.",
                "ops",
                f'sum(rate(pacs_transcode_policy_outcomes_total{{{NS},outcome="transcoded"}}[5m]))',
                width=6,
            )
        )
        .with_row(row("Conversions"))
        .with_panel(
            graph(
                "Latency by output syntax",
                "Time to convert one object (p50, p95, p99).",
                "s",
                *quantiles("pacs_transcode_duration_seconds", "transfer_syntax"),
            )
        )
        .with_panel(
            graph(
                "Bytes by syntax and direction",
                "Decoded pixel bytes in, written object bytes out, per second.",
                "Bps",
                query(
                    f"sum by (transfer_syntax, direction) "
                    f"(rate(pacs_transcode_bytes_total{{{NS}}}[{RATE}]))",
                    "{{transfer_syntax}} {{direction}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Refusals by reason",
                "Per error class: UnsupportedImageError, NotEncodableError, LossyRefusedError...",
                "ops",
                query(
                    f"sum by (reason) (rate(pacs_transcode_failures_total{{{NS}}}[{RATE}]))"
                    " or vector(0)",
                    "{{reason}}",
                ),
            )
        )
        .with_panel(
            graph(
                "On-store policy outcomes",
                "transcoded, kept, superseded (a newer version exists), gone, not-encodable.",
                "ops",
                query(
                    f"sum by (outcome) "
                    f"(rate(pacs_transcode_policy_outcomes_total{{{NS}}}[{RATE}]))",
                    "{{outcome}}",
                ),
            )
        )
        .build()
    )


def deid() -> Dashboard:
    """The de-identification service: copies made, refusals, burned-in text masked, and every
    read of a re-identification map."""
    return (
        new_dashboard(
            "cloudpacs-deid",
            "cloudpacs / De-identification",
            "Instances de-identified (streamed, study operations, routing rules), refusals, "
            "pixel regions masked and re-identification map reads.",
        )
        .with_row(row("Now"))
        .with_panel(
            single(
                "De-identified / s",
                "Instances de-identified successfully, every trigger.",
                "ops",
                f'sum(rate(pacs_deid_instances_total{{{NS},outcome="ok"}}[5m]))',
            )
        )
        .with_panel(
            single(
                "Refused / s",
                "Unreadable input, or burned-in annotation without Clean Pixel Data.",
                "ops",
                f'sum(rate(pacs_deid_instances_total{{{NS},outcome="refused"}}[5m]))',
                thresholds=[(None, "green"), (0.01, "orange")],
            )
        )
        .with_panel(
            single(
                "Re-identifications (24 h)",
                "Reads of a re-identification map; each is also an audit event.",
                "short",
                f"sum(increase(pacs_deid_reidentifications_total{{{NS}}}[24h]))",
            )
        )
        .with_row(row("Work"))
        .with_panel(
            graph(
                "Instances by outcome and trigger",
                "instance = streamed, operation = stored study, rule = routing rule.",
                "ops",
                query(
                    f"sum by (outcome, trigger) (rate(pacs_deid_instances_total{{{NS}}}[{RATE}]))",
                    "{{trigger}} {{outcome}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Time per instance",
                "Parse, profile, pixel cleaning (OCR) and write of one instance.",
                "s",
                *quantiles("pacs_deid_duration_seconds", "trigger"),
            )
        )
        .with_panel(
            graph(
                "Pixel regions masked",
                "Under Clean Pixel Data: configured regions and text found by OCR.",
                "ops",
                query(
                    f"sum by (reason) (rate(pacs_deid_masked_regions_total{{{NS}}}[{RATE}]))",
                    "{{reason}}",
                ),
            )
        )
        .build()
    )


def router() -> Dashboard:
    """Routing between facilities: each destination's queue, what was sent and refused, and
    prefetch of priors."""
    return (
        new_dashboard(
            "cloudpacs-router",
            "cloudpacs / Router",
            "Per destination: instances queued (the sender group's lag), sent, refused "
            "(dead-lettered) and retried; time since the last success; prefetched priors.",
        )
        .with_row(row("Now"))
        .with_panel(
            single(
                "Queued",
                "Instances waiting in every destination's queue; it grows while one is down.",
                "short",
                f"sum(pacs_route_queued{{{NS}}})",
                thresholds=[(None, "green"), (100, "orange"), (1000, "red")],
            )
        )
        .with_panel(
            single(
                "Sent / s",
                "Instances the destinations accepted.",
                "ops",
                f"sum(rate(pacs_route_sent_total{{{NS}}}[5m]))",
            )
        )
        .with_panel(
            single(
                "Refused (24 h)",
                "Instances a destination refused for good, on the senders' dead-letter topics.",
                "short",
                f"sum(increase(pacs_route_failed_total{{{NS}}}[24h]))",
                thresholds=[(None, "green"), (1, "orange")],
            )
        )
        .with_row(row("Destinations"))
        .with_panel(
            graph(
                "Queued by destination",
                "Consumer lag of each destination's sender group (pacs.route.<name>.v1).",
                "short",
                query(f"max by (destination) (pacs_route_queued{{{NS}}})", "{{destination}}"),
            )
        )
        .with_panel(
            graph(
                "Enqueued, sent, refused and retried by destination",
                "Enqueued: matched a rule. Retried: the destination was down or out of "
                "resources; the queue waits.",
                "ops",
                query(
                    f"sum by (destination) (rate(pacs_route_sent_total{{{NS}}}[{RATE}]))",
                    "{{destination}} sent",
                ),
                query(
                    f"sum by (destination) (rate(pacs_route_failed_total{{{NS}}}[{RATE}]))",
                    "{{destination}} refused",
                    "B",
                ),
                query(
                    f"sum by (destination) (rate(pacs_route_retries_total{{{NS}}}[{RATE}]))",
                    "{{destination}} retried",
                    "C",
                ),
                query(
                    f"sum by (destination) (rate(pacs_route_enqueued_total{{{NS}}}[{RATE}]))",
                    "{{destination}} enqueued",
                    "D",
                ),
            )
        )
        .with_panel(
            graph(
                "Since the last success",
                "Seconds since each destination last accepted an instance (while it has one).",
                "s",
                query(
                    f"time() - max by (destination) "
                    f"(pacs_route_last_success_timestamp_seconds{{{NS}}} > 0)",
                    "{{destination}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Time per instance sent",
                "Reading from storage and the C-STORE or STOW-RS exchange.",
                "s",
                *quantiles("pacs_route_send_duration_seconds", "destination"),
            )
        )
        .with_panel(
            graph(
                "Prefetched priors",
                "Prior studies moved from the remote archive when an order arrived.",
                "ops",
                query(
                    f"sum by (outcome) (rate(pacs_route_prefetched_studies_total{{{NS}}}[{RATE}]))",
                    "{{outcome}}",
                ),
            )
        )
        .build()
    )


DASHBOARDS = {
    "ingest-overview": ingest_overview,
    "service-health": service_health,
    "kafka-lag": kafka_lag,
    "storage": storage,
    "transcoder": transcoder,
    "deid": deid,
    "router": router,
}
"""File name (without .json) -> builder."""

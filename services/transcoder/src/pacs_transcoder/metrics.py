"""Prometheus metrics of the transcoder (exported by the service host's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TRANSCODE_DURATION = Histogram(
    "pacs_transcode_duration_seconds",
    "Time to transcode one object, by output transfer syntax",
    ["transfer_syntax"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TRANSCODE_BYTES = Counter(
    "pacs_transcode_bytes",
    "Pixel bytes decoded (in) and object bytes written (out), by output transfer syntax",
    ["transfer_syntax", "direction"],
)
TRANSCODE_FAILURES = Counter(
    "pacs_transcode_failures",
    "Transcodings refused or failed, by reason (the error class)",
    ["reason"],
)
POLICY_OUTCOMES = Counter(
    "pacs_transcode_policy_outcomes",
    "On-store policy decisions: transcoded, kept (no rule or already right), failed",
    ["outcome"],
)

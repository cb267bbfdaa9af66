"""Settings of the indexer (``PACS_INDEXER_*``, Kafka under ``PACS_KAFKA_*``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pacs_common.audit_events import AuditSettings
from pacs_common.auth import AuthSettings
from pacs_common.settings import KafkaSettings, ServiceSettings
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from pacs_indexer.retention import RetentionRule


class IndexerSettings(ServiceSettings):
    """Everything the indexer reads from its environment, once, at start-up."""

    model_config = SettingsConfigDict(env_prefix="PACS_INDEXER_", extra="ignore")

    service_name: str = "indexer"
    allowed_peers: list[str] = Field(
        default_factory=lambda: ["gateway", "cli", "dicomweb", "deid", "hl7"],
        description="identities that may call QueryService (PACS_INDEXER_ALLOWED_PEERS, JSON)",
    )
    grpc_port: int = Field(50052, ge=0, le=65535, description="0 picks a free port (tests)")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Prometheus /metrics port; None = off, 0 = free port"
    )
    database_url: str = Field(
        "sqlite:///./.cache/run/index.sqlite",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db",
    )
    storage_target: str = Field("127.0.0.1:50051", description="host:port of StorageService")
    migrate_on_start: bool = Field(
        True,
        description=(
            "migrate the index schema at start-up; false (the chart, whose pre-upgrade hook "
            "runs `pacs-indexer migrate`): only check the schema and refuse to start if older"
        ),
    )
    consumer_group: str = "pacs-indexer"
    workflow_consumer_group: str = Field(
        "pacs-indexer-workflow", description="group consuming HL7 patient and order events"
    )
    batch_max_events: int = Field(
        200,
        ge=1,
        description="most events of one partition indexed in one transaction (1: one by one)",
    )
    consume_events: bool = Field(
        True, description="consume storage events (off: serve queries from the index only)"
    )
    max_results: int = Field(
        1000, ge=1, description="largest result a query may return without an explicit limit"
    )
    fuzzy_matching_default: bool = Field(
        False,
        description="match person names case-insensitively even when a query does not ask",
    )
    header_prefix_bytes: int = Field(
        64 * 1024, ge=1024, description="bytes read from storage to parse a header first"
    )
    statistics_interval_s: float = Field(
        600.0, gt=0, description="how often SQLite's planner statistics are refreshed"
    )
    extra_attributes: dict[str, list[str]] = Field(
        default_factory=dict,
        description='extra searchable attributes per level, JSON: {"STUDY": ["InstitutionName"]}',
    )
    rejected_delete_after: timedelta | None = Field(
        None,
        description="how long instances rejected by an IOCM rejection note (113001, 113037, "
        "113038) stay in storage: 'never' (keep; the default), 0 (delete at once), seconds or "
        "an ISO 8601 duration such as P30D",
    )
    rejected_delete_after_by_tenant: dict[str, timedelta | None] = Field(
        default_factory=dict,
        description='per-tenant overrides of rejected_delete_after, JSON: {"research": "P0D"}',
    )
    retention_expired_delete_after: timedelta | None = Field(
        timedelta(0),
        description="the same for 113039 Data Retention Policy Expired (default 0: at once)",
    )
    rejected_sweep_interval_s: float = Field(
        60.0, gt=0, description="how often rejected instances due for deletion are looked for"
    )
    retention: dict[str, RetentionRule] = Field(
        default_factory=dict,
        description='retention rules per tenant ("*": every other tenant), JSON: '
        '{"*": {"years": 10, "pediatric_years": 25}}; none: nothing is ever due',
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)

    @field_validator("rejected_delete_after", "retention_expired_delete_after", mode="before")
    @classmethod
    def _never(cls, value: Any) -> Any:
        """'never' (or empty) keeps rejected instances forever; a number is seconds."""
        if not isinstance(value, str):
            return value
        text = value.strip().lower()
        if text in ("", "never"):
            return None
        try:
            return float(text)
        except ValueError:
            return value.strip()  # ISO 8601 (P30D), or an error that names the key

    @field_validator("rejected_delete_after_by_tenant", mode="before")
    @classmethod
    def _never_by_tenant(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {tenant: cls._never(period) for tenant, period in value.items()}
        return value

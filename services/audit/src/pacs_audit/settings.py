"""Settings of the audit service (``PACS_AUDIT_*``, Kafka under ``PACS_KAFKA_*``)."""

from __future__ import annotations

from pathlib import Path

from pacs_common.audit_events import TOPIC_AUDIT, AuditSettings
from pacs_common.auth import AuthSettings
from pacs_common.settings import KafkaSettings, ServiceSettings
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict


class AuditServiceSettings(ServiceSettings):
    """Everything the audit service reads from its environment, once, at start-up."""

    model_config = SettingsConfigDict(env_prefix="PACS_AUDIT_", extra="ignore")

    service_name: str = "audit"
    allowed_peers: list[str] = Field(
        default_factory=lambda: ["cli", "dicomweb"],
        description="identities that may call AuditService (JSON list)",
    )
    grpc_port: int = Field(50056, ge=0, le=65535, description="0 picks a free port (tests)")
    database_url: str = Field(
        "sqlite:///./.cache/run/audit.sqlite",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db",
    )
    topic: str = Field(TOPIC_AUDIT, description="the audit topic consumed")
    consumer_group: str = "pacs-audit"
    signing_key: SecretStr | None = Field(
        None, description="Ed25519 private key (PEM, PKCS#8) signing the checkpoints (a secret)"
    )
    signing_key_file: Path | None = Field(
        Path(".cache/run/audit-signing.pem"),
        description="PEM file of the signing key when signing_key is unset (created if absent)",
    )
    checkpoint_every: int = Field(1000, ge=1, description="records between signed checkpoints")
    checkpoint_interval_s: float = Field(
        60.0, gt=0, description="also sign the head this often when it moved"
    )
    max_results: int = Field(10_000, ge=1, description="most records one Query returns")
    syslog_host: str | None = Field(None, description="syslog collector (RFC 5425); None: off")
    syslog_port: int = Field(6514, ge=1, le=65535)
    syslog_ca_file: Path | None = Field(
        None, description="CA of the collector's certificate; default: the system's trust store"
    )
    syslog_cert_file: Path | None = Field(None, description="client certificate (PEM)")
    syslog_key_file: Path | None = Field(None, description="client key (PEM)")
    syslog_server_name: str | None = Field(
        None, description="name checked in the collector's certificate; default: syslog_host"
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    audit: AuditSettings = Field(
        default_factory=AuditSettings,
        description="this service's own audit events (PACS_AUDIT_EVENTS_*)",
    )

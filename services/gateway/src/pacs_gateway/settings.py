"""Settings of the gateway (``PACS_GATEWAY_*``).

The DICOM listener, the IngestService gRPC port, where storage and the indexer are, which
callers are let in, and the association limits. Read once at start-up and passed down.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal, Self

from pacs_common.audit_events import AuditSettings
from pacs_common.auth import AuthSettings
from pacs_common.errors import InvalidArgumentError
from pacs_common.settings import KafkaSettings, ServiceSettings
from pacs_common.tenants import check_tenant
from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

# PS3.5 6.2: an AE title is 1-16 characters of the default repertoire without backslash or
# control characters; leading and trailing spaces are not significant.
AE_TITLE_MAX = 16


def check_ae_title(value: str) -> str:
    """A valid AE title, stripped (PS3.5 6.2).

    Raises:
        ValueError: empty, too long, or with forbidden characters.
    """
    stripped = value.strip()
    if not 0 < len(stripped) <= AE_TITLE_MAX or "\\" in stripped or not stripped.isprintable():
        raise ValueError("an AE title is 1-16 printable characters without backslash (PS3.5 6.2)")
    return stripped


class GatewaySettings(ServiceSettings):
    """Everything the gateway needs to know at start-up."""

    model_config = SettingsConfigDict(env_prefix="PACS_GATEWAY_", extra="ignore")

    service_name: str = "gateway"
    allowed_peers: list[str] = Field(
        default_factory=lambda: ["cli", "dicomweb"],
        description="identities that may call IngestService (PACS_GATEWAY_ALLOWED_PEERS, JSON)",
    )
    grpc_port: int = Field(50053, ge=0, le=65535, description="IngestService; 0 = free port")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Prometheus /metrics port; None = off, 0 = free port"
    )

    ae_title: str = Field("CLOUDPACS", description="the gateway's own (called) AE title")
    require_called_ae_title: bool = Field(
        True, description="reject associations addressed to another called AE title"
    )
    dicom_host: str = Field("127.0.0.1", description="address the DIMSE listener binds")
    dicom_port: int = Field(11112, ge=0, le=65535, description="DIMSE port; 0 = free port")

    storage_target: str = Field("127.0.0.1:50051", description="host:port of StorageService")
    indexer_target: str = Field("127.0.0.1:50052", description="host:port of QueryService")
    transcoder_target: str | None = Field(
        "127.0.0.1:50054",
        description="host:port of TranscodeService, asked when a retrieve receiver does not "
        "accept the stored syntax; None: such instances fail their sub-operation",
    )
    transcode_timeout: float = Field(
        300.0, gt=0, description="deadline of one transcoding on retrieve, seconds"
    )
    retrieve_lossy_fallback: bool = Field(
        False,
        description="send a lossless instance in a lossy syntax when the receiver accepted "
        "nothing lossless (C-MOVE/C-GET); off: such sub-operations fail",
    )
    retrieve_spool_dir: Path | None = Field(
        None, description="where retrieved instances wait to be sent (default: the system's)"
    )
    default_tenant: str = Field("default", min_length=1, description="tenant of callers")

    allowed_networks: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="source networks allowed to open associations (any calling AE title)",
    )
    max_associations: int = Field(32, ge=1, description="concurrent associations per process")
    max_pdu_size: int = Field(
        4 * 1024**2,
        ge=0,
        description="largest P-DATA PDU we accept (announced as Maximum Length Received, "
        "PS3.8 D.1), bytes; a longer one is aborted as its header arrives; 0 = announce "
        "unlimited (the bound is then max_dataset_bytes)",
    )
    max_dataset_bytes: int = Field(
        512 * 1024**2,
        ge=1024,
        description="largest data set of one DIMSE message (a C-STORE), bytes; the "
        "association is aborted when its fragments pass it",
    )
    max_connections_per_address: int = Field(
        32, ge=1, description="open DICOM connections from one source address, per pod"
    )
    max_pending_per_address: int = Field(
        8,
        ge=1,
        description="connections from one address that have not sent A-ASSOCIATE-RQ, per pod",
    )
    max_pending_connections: int = Field(
        64, ge=1, description="connections that have not sent A-ASSOCIATE-RQ, per pod"
    )
    pod_max_associations: int = Field(
        64, ge=1, description="associations open at once, all worker processes together"
    )
    artim_timeout: float = Field(
        10.0,
        gt=0,
        description="seconds a connection may stay without sending A-ASSOCIATE-RQ "
        "(ARTIM, PS3.8 9.1.5)",
    )
    network_timeout: float = Field(60.0, gt=0, description="idle connection timeout, seconds")
    acse_timeout: float = Field(30.0, gt=0, description="association negotiation timeout")
    dimse_timeout: float = Field(30.0, gt=0, description="wait for a DIMSE message, seconds")

    storage_timeout: float = Field(60.0, gt=0, description="deadline of one storage.Put")
    write_path: Literal["grant", "stream"] = Field(
        "grant",
        description="grant: the bytes go straight to S3 through storage's write grants (the "
        "gateway must reach the S3 endpoint); stream: through storage's streaming Put",
    )
    s3_ca_bundle: str | None = Field(
        None, description="CA bundle of an HTTPS S3 endpoint reached through grants"
    )
    index_lag_max_events: int = Field(
        100,
        ge=0,
        description="hold a C-STORE while the indexer has more than this many stored instances "
        "left to index (its consumer lag), so that Success does not outrun the index; "
        "0 = never hold",
    )
    index_lag_hold_max_s: float = Field(
        2.0, ge=0, description="longest a C-STORE is held for the indexer to catch up"
    )
    index_lag_stall_s: float = Field(
        5.0, gt=0, description="an indexer without progress this long no longer holds C-STOREs"
    )
    index_lag_poll_s: float = Field(0.2, gt=0, description="how often the lag is read")
    indexer_consumer_group: str = Field(
        "pacs-indexer",
        validation_alias=AliasChoices(
            "indexer_consumer_group",
            "PACS_GATEWAY_INDEXER_CONSUMER_GROUP",
            "PACS_INDEXER_CONSUMER_GROUP",
        ),
        description="the indexer's consumer group (PACS_INDEXER_CONSUMER_GROUP when set)",
    )
    query_timeout: float = Field(30.0, gt=0, description="deadline of one indexer query page")
    find_page_size: int = Field(500, ge=1, le=10_000, description="C-FIND results per page")
    max_file_bytes: int = Field(
        2 * 1024**3, ge=1024, description="largest file accepted by IngestService.Store"
    )

    site_registry: Path | None = Field(
        None, description="YAML site registry; when set it replaces allowed_networks"
    )
    registry_poll_s: float = Field(2.0, gt=0, description="how often the registry file is checked")

    tls_port: int | None = Field(None, ge=0, le=65535, description="DICOM TLS port; None = off")
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = Field(None, description="CA bundle that signs client certificates")
    tls_require_client_cert: bool = Field(
        False, description="require a client certificate on every TLS association"
    )
    tls_only: bool = Field(
        False, description="DICOM over TLS only: the TLS port is bound, no plaintext DICOM port"
    )

    commitment_wait_s: float = Field(
        30.0, gt=0, description="how long Storage Commitment waits for instances to be indexed"
    )
    duplicate_policy: Literal["new_version", "refuse"] = Field(
        "new_version",
        description="a stored SOP Instance UID arriving with other bytes: new_version (kept, "
        "warning 0xB000) or refuse (0x0111); see pacs_gateway.duplicates",
    )
    duplicate_policy_by_tenant: dict[str, Literal["new_version", "refuse"]] = Field(
        default_factory=dict, description="duplicate_policy per tenant (JSON object)"
    )
    spool_memory_bytes: int = Field(
        8 * 1024**2,
        ge=0,
        description="IngestService: bytes of a file kept in memory before spooling to disk",
    )
    max_pending_commitments: int = Field(
        32, ge=1, description="Storage Commitment requests in progress per process (more: 0x0213)"
    )
    commitment_recovery_interval_s: float = Field(
        30.0,
        ge=0,
        description="how often the first worker reports Storage Commitment requests left "
        "unreported by a process that died (0: never)",
    )
    commitment_recovery_margin_s: float = Field(
        30.0,
        ge=0,
        description="a request is taken over once commitment_wait_s + query_timeout + this "
        "margin have passed since it was accepted",
    )
    serve_grpc: bool = Field(True, description="serve IngestService (off in extra workers)")
    reuse_port: bool = Field(False, description="bind DICOM ports with SO_REUSEPORT")
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="receiving processes sharing the DICOM port(s) with SO_REUSEPORT",
    )
    allow_private_sop_classes: bool = Field(
        False, description="accept C-STORE of any SOP class, including private ones"
    )
    auth: AuthSettings = Field(default_factory=AuthSettings)
    require_user_identity: bool = Field(
        False,
        description="admit only associations whose A-ASSOCIATE-RQ carries a valid JWT user "
        "identity (PS3.7 D.3.3.7) of the site's tenant; off: the site registry alone admits, "
        "and a JWT, when sent, is still verified and bounds the association's roles",
    )

    audit: AuditSettings = Field(default_factory=AuditSettings)
    kafka: KafkaSettings | None = Field(
        None, description="where audit events go; default: PACS_KAFKA_*, read at start"
    )

    def audit_kafka(self) -> KafkaSettings | None:
        """The brokers audit events go to; None when auditing is off.

        Raises:
            SystemExit: auditing is on and PACS_KAFKA_* is incomplete (naming the key).
        """
        if not self.audit.enabled:
            return None
        if self.kafka is None:
            try:
                self.kafka = KafkaSettings()
            except ValueError as exc:
                raise SystemExit(
                    f"auditing needs Kafka (PACS_AUDIT_EVENTS_ENABLED=true): {exc}"
                ) from exc
        return self.kafka

    @field_validator("ae_title")
    @classmethod
    def _ae_title_valid(cls, value: str) -> str:
        return check_ae_title(value)

    @field_validator("default_tenant")
    @classmethod
    def _tenant_valid(cls, value: str) -> str:
        try:
            check_tenant(value)
        except InvalidArgumentError as exc:
            raise ValueError(exc.message) from exc
        return value

    @field_validator("allowed_networks")
    @classmethod
    def _networks_valid(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value

    @model_validator(mode="after")
    def _tls_only_has_tls(self) -> Self:
        """TLS-only needs the TLS port and its certificate: without them it would serve nothing."""
        if self.tls_only:
            missing = [
                f"PACS_GATEWAY_{name.upper()}"
                for name in ("tls_port", "tls_cert_file", "tls_key_file")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"PACS_GATEWAY_TLS_ONLY needs {', '.join(missing)}")
        return self

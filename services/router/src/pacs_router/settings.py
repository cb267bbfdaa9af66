"""Settings of the router (``PACS_ROUTER_*``, Kafka under ``PACS_KAFKA_*``).

What to forward where lives in the rules file (:mod:`pacs_router.rules`), named by
``PACS_ROUTER_RULES_FILE``; these settings say how the process runs.
"""

from __future__ import annotations

from pathlib import Path

from pacs_common.audit_events import AuditSettings
from pacs_common.auth import AuthSettings
from pacs_common.settings import KafkaSettings, ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class RouterSettings(ServiceSettings):
    """Everything the router reads from its environment, once, at start-up."""

    model_config = SettingsConfigDict(env_prefix="PACS_ROUTER_", extra="ignore")

    service_name: str = "router"
    allowed_peers: list[str] = Field(
        default_factory=lambda: ["cli"],
        description="identities that may call RouterService (PACS_ROUTER_ALLOWED_PEERS, JSON)",
    )
    grpc_port: int = Field(50059, ge=0, le=65535, description="0 picks a free port (tests)")
    rules_file: Path = Field(
        Path("./.cache/run/routes.yaml"),
        description="YAML or JSON file of destinations, per-tenant rules and prefetch",
    )
    storage_target: str = Field("127.0.0.1:50051", description="host:port of StorageService")
    s3_ca_bundle: str | None = Field(
        None, description="CA bundle of an HTTPS S3 endpoint reached through read grants"
    )
    storage_timeout_s: float = Field(60.0, gt=0, description="deadline of one storage read")
    consumer_group: str = Field(
        "router", description="group reading pacs.instances.v1 to evaluate the rules"
    )
    sender_group_prefix: str = Field(
        "router-send-", description="each destination's sender is the group <prefix><name>"
    )
    prefetch_group: str = Field(
        "router-prefetch", description="group reading pacs.workflow.v1 for orders (prefetch)"
    )
    topic_prefix: str = Field(
        "pacs.route.", description="each destination's queue is the topic <prefix><name>.v1"
    )
    ae_title: str = Field(
        "CLOUDPACS", max_length=16, description="calling AE title of C-STORE/C-FIND/C-MOVE"
    )
    dimse_timeout_s: float = Field(
        60.0, gt=0, description="association, DIMSE and network timeout towards destinations"
    )
    association_idle_s: float = Field(
        5.0, gt=0, description="release an association to a destination idle this long"
    )
    status_interval_s: float = Field(
        10.0, gt=0, description="how often the queue depth metric (pacs_route_queued) is refreshed"
    )
    consume_events: bool = Field(
        True, description="evaluate rules, send and prefetch (off: only answer Status)"
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)

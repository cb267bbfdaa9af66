"""Settings of the de-identification service (``PACS_DEID_*``; Kafka under ``PACS_KAFKA_*``,
authentication under ``PACS_AUTH_*``).

Projects, routing rules and region masks are JSON values (or a YAML/JSON file named by
``PACS_DEID_CONFIG_FILE``, whose keys are the same names). A project's key is a secret: give it
through the environment or a mounted Secret, never in a values file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pacs_common.auth import AuthSettings
from pacs_common.settings import KafkaSettings, ServiceSettings
from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from pacs_deid.options import parse_options
from pacs_deid.safe_private import SafePrivateEntry

MIB = 1024 * 1024


class ProjectSettings(BaseModel):
    """One de-identification project: who may feed it, where copies go, its key and defaults."""

    source_tenants: list[str]
    target_tenant: str
    key: SecretStr = Field(description="HMAC key of the project's pseudonyms (a secret)")
    options: list[str] = Field(default_factory=list, description="default options")
    patient_prefix: str = Field("ANON", max_length=16)
    shift_days_min: int = Field(-3500, description="date shift range (Modified Dates option)")
    shift_days_max: int = -1700
    reidentification_map: bool = Field(
        False, description="keep an encrypted map pseudonym -> original (needs reid_key)"
    )
    safe_private: list[SafePrivateEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Self:
        parse_options(self.options)
        if self.target_tenant in self.source_tenants:
            raise ValueError("a project's target tenant must not be one of its sources")
        if len(self.key.get_secret_value()) < 16:
            raise ValueError("a project key needs at least 16 characters")
        return self


class RoutingRule(BaseModel):
    """Copy, de-identified, every stored instance of ``source_tenant`` that matches."""

    name: str
    project: str
    source_tenant: str
    modalities: list[str] = Field(default_factory=list, description="any of; empty = all")
    series_description: str | None = Field(None, description="regular expression (search)")
    study_description: str | None = Field(None, description="regular expression (search)")
    sop_class_uids: list[str] = Field(default_factory=list, description="any of; empty = all")
    options: list[str] | None = None


class RegionMask(BaseModel):
    """Pixel regions known to carry burned-in text for some devices (x, y, width, height)."""

    manufacturer: str | None = Field(None, description="regular expression, case-insensitive")
    model: str | None = Field(None, description="regular expression, case-insensitive")
    modality: str | None = None
    regions: list[tuple[int, int, int, int]]


class DeidSettings(ServiceSettings):
    """Everything the de-identification service reads from its environment, once."""

    model_config = SettingsConfigDict(env_prefix="PACS_DEID_", extra="ignore")

    service_name: str = "deid"
    allowed_peers: list[str] = Field(
        default_factory=lambda: ["cli", "dicomweb"],
        description="identities that may call DeidService (PACS_DEID_ALLOWED_PEERS, JSON)",
    )
    grpc_port: int = Field(50055, ge=0, le=65535, description="0 picks a free port (tests)")
    storage_target: str = Field("127.0.0.1:50051", description="host:port of StorageService")
    database_url: str = Field(
        "sqlite:///./.cache/run/deid.sqlite",
        description="SQLAlchemy URL of the re-identification map (sqlite or postgresql+psycopg)",
    )
    reid_key: SecretStr | None = Field(
        None, description="Fernet key (urlsafe base64, 32 bytes) encrypting the map at rest"
    )
    config_file: Path | None = Field(None, description="YAML/JSON with projects, rules, masks")
    projects: dict[str, ProjectSettings] = Field(default_factory=dict)
    routing_rules: list[RoutingRule] = Field(default_factory=list)
    consume_events: bool = Field(True, description="run the routing rules on InstanceStored")
    consumer_group: str = "pacs-deid-routing"
    region_masks: list[RegionMask] = Field(default_factory=list)
    ocr: bool = Field(True, description="detect burned-in text with OCR under Clean Pixel Data")
    ocr_min_confidence: float = Field(0.5, ge=0, le=1)
    ocr_margin_px: int = Field(2, ge=0, description="grown around each detected text box")
    burned_in_without_clean: Literal["reject", "keep"] = Field(
        "reject",
        description="BurnedInAnnotation=YES without Clean Pixel Data: refuse (default) or copy",
    )
    max_instance_bytes: int = Field(512 * MIB, ge=1)
    operation_concurrency: int = Field(4, ge=1, le=32)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)

    @model_validator(mode="before")
    @classmethod
    def _read_config_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("config_file"):
            path = Path(str(data["config_file"]))
            text = path.read_text()
            loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
            for key, value in (loaded or {}).items():
                data.setdefault(key, value)
        return data

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in self.routing_rules:
            project = self.projects.get(rule.project)
            if project is None:
                raise ValueError(f"routing rule {rule.name!r} names unknown project")
            if rule.source_tenant not in project.source_tenants:
                raise ValueError(f"routing rule {rule.name!r}: tenant is no source of project")
        needs_key = [n for n, p in self.projects.items() if p.reidentification_map]
        if needs_key and self.reid_key is None:
            raise ValueError(f"projects {needs_key} keep a re-identification map: set reid_key")
        return self

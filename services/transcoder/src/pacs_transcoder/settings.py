"""Settings of the transcoder (``PACS_TRANSCODER_*``; Kafka under ``PACS_KAFKA_*``, bearer
tokens under ``PACS_AUTH_*``)."""

from __future__ import annotations

import os

from pacs_common.auth import AuthSettings
from pacs_common.settings import KafkaSettings, ServiceSettings
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from pacs_transcoder.encoders import LossyOptions
from pacs_transcoder.policy import DEFAULT_RULES, PolicyRule, check_rules

MIB = 1024 * 1024


class TranscoderSettings(ServiceSettings):
    """Everything the transcoder reads from its environment, once, at start-up."""

    model_config = SettingsConfigDict(env_prefix="PACS_TRANSCODER_", extra="ignore")

    service_name: str = "transcoder"
    allowed_peers: list[str] = Field(
        default_factory=lambda: ["gateway", "dicomweb", "deid", "cli"],
        description="identities that may call TranscodeService (PACS_TRANSCODER_ALLOWED_PEERS)",
    )
    trusted_services: list[str] = Field(
        default_factory=lambda: ["gateway", "dicomweb", "deid"],
        description="peers that call without a bearer token and name the tenant themselves "
        "(they authenticated their own callers); added to PACS_AUTH_TRUSTED_SERVICES",
    )
    grpc_port: int = Field(50054, ge=0, le=65535, description="TranscodeService; 0 = free port")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Prometheus /metrics port; None = off, 0 = free port"
    )
    storage_target: str = Field("127.0.0.1:50051", description="host:port of StorageService")
    storage_timeout_s: float = Field(300.0, gt=0, description="deadline of one storage call")
    max_concurrent: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="transcodings running at once (each uses one core); others wait",
    )
    max_object_size: int = Field(
        5 * 1024 * MIB, ge=1024, description="largest object accepted (RESOURCE_EXHAUSTED above)"
    )
    spool_memory_bytes: int = Field(
        16 * MIB,
        ge=0,
        description="bytes of an object (in or out) held in memory before it spills to a "
        "temporary file",
    )
    chunk_size: int = Field(1 * MIB, ge=4096, le=8 * MIB, description="bytes per response")
    uid_root: str | None = Field(
        None,
        description="prefix of the SOP Instance UIDs given to lossy outputs (default pydicom's)",
    )
    jpeg_quality: int = Field(90, ge=1, le=100, description="lossy JPEG quality")
    jpegls_near: int = Field(2, ge=1, le=255, description="JPEG-LS near-lossless NEAR")
    j2k_psnr: int = Field(
        50, ge=20, le=120, description="lossy JPEG 2000 target PSNR in dB (OpenJPEG)"
    )
    htj2k_quantization: float = Field(
        0.002, gt=0, lt=1, description="lossy HTJ2K base quantization step"
    )

    consume_events: bool = Field(
        True, description="apply the on-store policy to InstanceStored events"
    )
    consumer_group: str = "pacs-transcoder"
    policy: list[PolicyRule] = Field(
        default_factory=lambda: list(DEFAULT_RULES),
        description="on-store rules, JSON list of {tenant, modality, transfer_syntax, "
        "lossy, sources}: the first matching rule applies",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)

    _rules_valid = field_validator("policy")(check_rules)

    def lossy_options(self) -> LossyOptions:
        """The encoders' quality settings."""
        return LossyOptions(
            jpeg_quality=self.jpeg_quality,
            jpegls_near=self.jpegls_near,
            j2k_psnr=self.j2k_psnr,
            htj2k_quantization=self.htj2k_quantization,
        )

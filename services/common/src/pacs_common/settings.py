"""Typed settings shared by every service (pydantic-settings).

Each service subclasses :class:`ServiceSettings` with its own ``env_prefix`` and fields. Settings
are read once at start-up, validated immediately (a bad value stops the process with the key's
name), and passed down explicitly: nothing reads the environment later. Secrets use
:class:`pydantic.SecretStr`, which prints as ``**********``.
"""

from __future__ import annotations

from typing import Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pacs_common.tls import TlsSettings


class KafkaSettings(BaseSettings):
    """Where the Kafka brokers are (``PACS_KAFKA_*``)."""

    model_config = SettingsConfigDict(env_prefix="PACS_KAFKA_", extra="ignore")

    bootstrap: str = Field("127.0.0.1:19092", description="host:port[,host:port…] of brokers")
    client_id: str = "cloudpacs"
    request_timeout_ms: int = Field(10_000, ge=1_000)
    max_retries: int = Field(3, ge=0, description="handler attempts before dead-lettering")


class S3Settings(BaseSettings):
    """How to reach the S3 endpoint (``PACS_S3_*``)."""

    model_config = SettingsConfigDict(env_prefix="PACS_S3_", extra="ignore")

    endpoint: str = Field("http://127.0.0.1:17070", description="S3 endpoint URL")
    region: str = "us-east-1"
    bucket: str = "cloudpacs"
    access_key: SecretStr = SecretStr("cloudpacs")
    secret_key: SecretStr = SecretStr("cloudpacs-secret-key")
    verify_tls: bool = True
    ca_bundle: str | None = None
    connect_timeout_s: float = Field(3.0, gt=0)
    read_timeout_s: float = Field(30.0, gt=0)
    max_attempts: int = Field(3, ge=1, description="botocore retry attempts (standard mode)")


class ServiceSettings(BaseSettings):
    """Settings every service has; subclasses add their own with their own env prefix."""

    model_config = SettingsConfigDict(env_prefix="PACS_", extra="ignore")

    service_name: str = "cloudpacs"
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(0, ge=0, le=65535, description="0 picks a free port (tests)")
    log_level: str = "INFO"
    log_patient_data: bool = Field(
        False, description="only for debugging on test data: allows PHI in log records"
    )
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="one deadline for the whole stop: drain calls, consumers, flush"
    )
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Prometheus /metrics port; None = off, 0 = free port"
    )
    grpc_tls: TlsSettings = Field(
        default_factory=TlsSettings, description="mutual TLS of gRPC (PACS_TLS_*)"
    )
    allowed_peers: list[str] = Field(
        default_factory=list,
        description="identities (certificate common names) that may call this service's APIs; "
        "health and reflection answer any peer with a certificate from the CA",
    )

    @model_validator(mode="after")
    def _identity_defaults_to_the_service_name(self) -> Self:
        self.grpc_tls = self.grpc_tls.as_identity(self.service_name)
        return self

    @classmethod
    def load(cls) -> Self:
        """Read and validate settings from the environment, failing fast with the key's name.

        Raises:
            SystemExit: a value is invalid; the message names the environment variable.
        """
        try:
            return cls()
        except ValidationError as exc:
            prefix = str(cls.model_config.get("env_prefix", ""))
            problems = "; ".join(
                f"{prefix}{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
                for err in exc.errors()
            )
            raise SystemExit(f"invalid settings for {cls.__name__}: {problems}") from exc


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)

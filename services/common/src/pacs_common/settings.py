"""Typed settings shared by every service (pydantic-settings).

Each service subclasses :class:`ServiceSettings` with its own ``env_prefix`` and fields. Settings
are read once at start-up, validated immediately (a bad value stops the process with the key's
name), and passed down explicitly: nothing reads the environment later. Secrets use
:class:`pydantic.SecretStr`, which prints as ``**********``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pacs_common.tls import TlsSettings

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
"""Kafka's ``security.protocol`` values."""
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
"""The SASL mechanisms the services speak."""


class KafkaSettings(BaseSettings):
    """Where the Kafka brokers are and how to prove who we are to them (``PACS_KAFKA_*``).

    The default is SASL_SSL with SCRAM-SHA-512: events carry patient data, so a deployment that
    forgets to configure Kafka security gets a start-up error naming the missing key, never a
    plaintext connection. ``infra/up.sh`` writes the local broker's values into
    ``.cache/run/infra.env``; a deployment sets them from the chart's ``kafka.*`` values.
    """

    model_config = SettingsConfigDict(
        env_prefix="PACS_KAFKA_", extra="ignore", populate_by_name=True
    )

    bootstrap: str = Field("127.0.0.1:19092", description="host:port[,host:port…] of brokers")
    client_id: str = "cloudpacs"
    request_timeout_ms: int = Field(10_000, ge=1_000)
    max_retries: int = Field(3, ge=0, description="handler attempts before dead-lettering")
    security_protocol: SecurityProtocol = Field(
        "SASL_SSL", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_file: Path | None = Field(
        None,
        description="CA bundle (PEM) the brokers' certificates chain to; default: "
        "PACS_TLS_DIR/ca.crt if it exists, else the system's trust store",
    )
    ssl_cert_file: Path | None = Field(None, description="client certificate (PEM), for mTLS")
    ssl_key_file: Path | None = Field(None, description="client private key (PEM), for mTLS")
    tls_dir: Path | None = Field(
        None,
        validation_alias="PACS_TLS_DIR",
        description="the local PKI of `make up` (shared with the gRPC mTLS settings)",
    )

    @property
    def uses_sasl(self) -> bool:
        """True when the protocol authenticates with SASL."""
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        """True when the connection is encrypted."""
        return self.security_protocol in ("SSL", "SASL_SSL")

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.uses_sasl:
            missing = [
                key
                for key, value in (
                    ("PACS_KAFKA_SASL_USERNAME", self.sasl_username),
                    ("PACS_KAFKA_SASL_PASSWORD", self.sasl_password),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    f"{' and '.join(missing)} must be set when PACS_KAFKA_SECURITY_PROTOCOL is "
                    f"{self.security_protocol} (or set PACS_KAFKA_SECURITY_PROTOCOL=SSL/PLAINTEXT "
                    "for a broker without SASL)"
                )
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError(
                "PACS_KAFKA_SSL_CERT_FILE and PACS_KAFKA_SSL_KEY_FILE go together (client mTLS)"
            )
        if self.ssl_ca_file is None and self.tls_dir is not None:
            local_ca = self.tls_dir / "ca.crt"
            if local_ca.is_file():
                self.ssl_ca_file = local_ca
        return self


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

"""Settings of the hl7 service (``PACS_HL7_*``, Kafka under ``PACS_KAFKA_*``)."""

from __future__ import annotations

from typing import Self

from pacs_common.settings import KafkaSettings, ServiceSettings
from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict


class Hl7Settings(ServiceSettings):
    """Everything the hl7 service reads from its environment, once, at start-up."""

    model_config = SettingsConfigDict(env_prefix="PACS_HL7_", extra="ignore")

    service_name: str = "hl7"
    grpc_port: int = Field(
        50058, ge=0, le=65535, description="health and reflection only (0: a free port)"
    )
    mllp_host: str = Field("127.0.0.1", description="address the MLLP listener binds")
    mllp_port: int = Field(2575, ge=0, le=65535, description="MLLP port (0: a free port)")
    default_tenant: str | None = Field(
        "default", description="tenant of senders not in tenant_by_facility (None: reject them)"
    )
    tenant_by_facility: dict[str, str] = Field(
        default_factory=dict,
        description='sending facility (MSH-4) -> tenant, JSON: {"RADIOLOGY": "hospital-a"}',
    )
    application: str = Field("CLOUDPACS", description="our MSH-3 in ACKs and ORU messages")
    facility: str = Field("CLOUDPACS", description="our MSH-4 in ACKs and ORU messages")
    max_message_bytes: int = Field(
        1024 * 1024, ge=1024, description="largest HL7 message accepted on one MLLP frame"
    )
    idle_timeout_s: float = Field(
        300.0, gt=0, description="an MLLP connection silent this long is closed"
    )
    oru_host: str | None = Field(
        None, description="host of the ORU^R01 destination (None: reports are not sent)"
    )
    oru_port: int = Field(2576, ge=1, le=65535, description="MLLP port of the ORU destination")
    oru_target: str | None = Field(
        None, description="host:port of the ORU destination; when set, replaces oru_host/port"
    )
    oru_application: str = Field("RIS", description="MSH-5 of ORU messages")
    oru_facility: str = Field("HOSPITAL", description="MSH-6 of ORU messages")
    oru_timeout_s: float = Field(10.0, gt=0, description="wait for the destination's ACK")
    consumer_group: str = Field("pacs-hl7-oru", description="group consuming ReportIndexed")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)

    @model_validator(mode="after")
    def _split_oru_target(self) -> Self:
        if self.oru_target:
            host, _, port = self.oru_target.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("oru_target must be host:port")
            self.oru_host, self.oru_port = host, int(port)
        return self

"""Settings of the storage service (``PACS_STORAGE_*``; Kafka under ``PACS_KAFKA_*``, S3 under
``PACS_S3_*``)."""

from __future__ import annotations

from typing import Literal, Self

from pacs_common.settings import KafkaSettings, S3Settings, ServiceSettings
from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

MIB = 1024 * 1024
# S3 refuses parts below 5 MiB (except the last one) and a single CopyObject above 5 GiB.
S3_MIN_PART_SIZE = 5 * MIB
S3_MAX_COPY_SIZE = 5 * 1024 * MIB
# gRPC messages are capped at 16 MiB by pacs_common (grpc_server/grpc_client); keep room for
# the message envelope.
MAX_CHUNK_SIZE = 8 * MIB
# Kafka refuses records above 1 MiB by default (broker message.max.bytes, the producer's
# max_request_size): a header in InstanceStored must leave room for the rest of the event.
MAX_EVENT_HEADER_CAP = 768 * 1024

SseMode = Literal["none", "AES256", "aws:kms"]


class StorageSettings(ServiceSettings):
    """Everything the storage service reads from its environment, once, at start-up."""

    model_config = SettingsConfigDict(env_prefix="PACS_STORAGE_", extra="ignore")

    service_name: str = "storage"
    allowed_peers: list[str] = Field(
        default_factory=lambda: [
            "gateway",
            "indexer",
            "cli",
            "transcoder",
            "deid",
            "dicomweb",
            "router",
        ],
        description="identities that may call StorageService (PACS_STORAGE_ALLOWED_PEERS, JSON)",
    )
    grpc_port: int = Field(50051, ge=0, le=65535, description="StorageService; 0 = free port")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Prometheus /metrics port; None = off, 0 = free port"
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    s3: S3Settings = Field(default_factory=S3Settings)

    chunk_size: int = Field(
        1 * MIB, ge=4096, le=MAX_CHUNK_SIZE, description="bytes per Get message"
    )
    multipart_threshold: int = Field(
        16 * MIB, ge=S3_MIN_PART_SIZE, description="objects at least this big use multipart"
    )
    part_size: int = Field(8 * MIB, ge=S3_MIN_PART_SIZE, description="multipart part size")
    max_parts_in_flight: int = Field(
        4, ge=1, le=32, description="concurrent part uploads of one Put (bounds its memory)"
    )
    max_object_size: int = Field(
        S3_MAX_COPY_SIZE,
        ge=1,
        le=S3_MAX_COPY_SIZE,
        description="largest object accepted (a single S3 CopyObject is limited to 5 GiB)",
    )
    create_bucket: bool = Field(True, description="create the bucket at start when missing")
    sse: SseMode = Field(
        "AES256",
        description="server-side encryption requested on every write: none | AES256 | aws:kms",
    )
    sse_kms_key_id: str | None = Field(None, description="KMS key for sse=aws:kms")
    conditional_writes: bool = Field(
        True,
        description="use If-Match/If-None-Match writes (AWS S3, versitygw); turn off only for "
        "stores that reject them (a store that ignores them loses versions under races)",
    )
    uid_claims: bool = Field(
        True,
        description="refuse a SOP Instance UID that another study of the tenant holds, checked "
        "atomically at S3 with one claim object per UID (needs conditional_writes); off: "
        "only the gateway's check against its own recent instances and the index",
    )
    max_streamed_puts: int = Field(
        16,
        ge=0,
        le=64,
        description="Puts below the multipart threshold written to S3 while they arrive, at "
        "once (each holds a worker thread); 0 = receive first, then write",
    )
    event_header_cap_bytes: int = Field(
        256 * 1024,
        ge=0,
        le=MAX_EVENT_HEADER_CAP,
        description="largest header carried in InstanceStored (the object's bytes before Pixel "
        "Data); larger ones are read back from storage by consumers; 0 = never carry it",
    )
    kafka_retry_s: float = Field(
        2.0, gt=0, description="pause between attempts to reach Kafka while it is down"
    )
    grant_ttl_s: int = Field(
        300,
        ge=1,
        le=7 * 24 * 3600,
        description="how long the pre-signed requests of a write or read grant stay valid",
    )
    grant_s3_endpoint: str | None = Field(
        None,
        description="S3 endpoint written into grants when writers and readers reach S3 under "
        "another address than this service does (default: the service's own endpoint)",
    )
    reconcile_after_s: float = Field(
        60.0,
        gt=0,
        description="a write or delete not announced this long after its intent is settled by "
        "the reconciler (longer than any Put or granted write takes)",
    )
    reconcile_interval_s: float = Field(
        30.0, gt=0, description="pause between reconciler passes over the intent records"
    )
    list_page_size: int = Field(1000, ge=1, le=1000, description="List page size by default")

    @model_validator(mode="after")
    def _check_sizes(self) -> Self:
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise ValueError("sse_kms_key_id needs sse=aws:kms")
        return self

"""Settings of the DICOMweb service (``PACS_DICOMWEB_*``; bearer tokens under ``PACS_AUTH_*``)."""

from __future__ import annotations

from typing import Literal

from pacs_common.auth import AuthSettings
from pacs_common.settings import ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class DicomwebSettings(ServiceSettings):
    """Everything the DICOMweb service reads from its environment, once, at start-up."""

    model_config = SettingsConfigDict(env_prefix="PACS_DICOMWEB_", extra="ignore")

    service_name: str = "dicomweb"
    grpc_port: int = Field(
        50057, ge=0, le=65535, description="gRPC health only (probes); 0 = free port"
    )
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Prometheus /metrics port; None = off, 0 = free port"
    )
    http_host: str = Field("127.0.0.1", description="address the HTTP server binds")
    http_port: int = Field(8080, ge=0, le=65535, description="HTTP port; 0 = free port (tests)")
    base_path: str = Field("/dicomweb", description="path prefix of every DICOMweb resource")
    public_url: str = Field(
        "",
        description="absolute base URL put in RetrieveURL attributes (behind an ingress); "
        "empty = derived from each request",
    )
    indexer_target: str = Field("127.0.0.1:50052", description="host:port of QueryService")
    storage_target: str = Field("127.0.0.1:50051", description="host:port of StorageService")
    query_timeout: float = Field(30.0, gt=0, description="deadline of one indexer call, seconds")
    storage_timeout: float = Field(120.0, gt=0, description="deadline of one storage call")
    read_path: Literal["grant", "stream"] = Field(
        "grant",
        description="grant: instances are read straight from S3 through storage's read grants "
        "(the service must reach the S3 endpoint); stream: through storage's streaming Get",
    )
    s3_ca_bundle: str | None = Field(
        None, description="CA bundle of an HTTPS S3 endpoint reached through grants"
    )
    qido_default_limit: int = Field(
        1000, ge=1, description="results of a QIDO search without `limit` (then a Warning)"
    )
    qido_max_limit: int = Field(10_000, ge=1, description="largest `limit` honoured")
    max_instance_bytes: int = Field(
        2 * 1024**3, ge=1024, description="largest instance accepted in a STOW-RS request"
    )
    max_decode_bytes: int = Field(
        512 * 1024**2,
        ge=1024,
        description="largest stored instance read whole for frames, bulk data, rendering or "
        "transcoding (a whole study is never held: instances stream one by one)",
    )
    instance_cache_bytes: int = Field(
        256 * 1024**2,
        ge=0,
        description="whole instances kept for frames, bulk data and rendering (per process; "
        "checked against storage's version on every use); 0 = off",
    )
    retrieve_prefetch: int = Field(
        8, ge=1, le=64, description="instances of a study/series retrieval opened ahead"
    )
    retrieve_buffer_bytes: int = Field(
        8 * 1024**2,
        ge=0,
        description="instances up to this size are read whole ahead of their turn (memory: "
        "prefetch x this per retrieval); larger ones stream",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description='origins allowed by CORS, JSON (["https://viewer.example"]); empty = no CORS',
    )
    loopback_default_tenant: bool = Field(
        True,
        description="callers on 127.0.0.1/::1 without a token act in `default_tenant` with every "
        "role, as the DIMSE gateway admits loopback callers (embedded default; off in the chart)",
    )
    default_tenant: str = Field("default", min_length=1, description="tenant of loopback callers")
    gzip_min_bytes: int = Field(1024, ge=0, description="JSON answers from this size are gzipped")
    auth: AuthSettings = Field(default_factory=AuthSettings)

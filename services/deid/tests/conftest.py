"""Fixtures of the de-identification service tests: the service in-process on a free port,
with a real storage service over the local S3 server, real Kafka, and bearer tokens from the
local hydra."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pacs_common.auth import Role
from pacs_common.clients.deid import DeidClient
from pacs_common.clients.storage import StorageClient
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls
from pacs_common.oauth_client import bearer_interceptors
from pacs_common.settings import KafkaSettings
from pacs_deid.app import DeidApp, create_app
from pacs_deid.settings import DeidSettings
from pacs_storage.app import StorageApp
from pacs_testkit.hydra import Hydra
from pacs_testkit.storage import start_storage

PROJECT_KEY = "research-project-key-0123456789"


@pytest.fixture
def target_tenant() -> str:
    """The research tenant that receives de-identified copies."""
    return f"r{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def storage_app(infra_env: dict[str, str], bucket_name: str) -> AsyncIterator[StorageApp]:
    """A real storage service over a fresh bucket."""
    app = await start_storage(bucket_name)
    yield app
    await app.stop()


def deid_settings(
    tenant: str, target: str, tmp_path: Path, storage_port: int = 0, **extra: Any
) -> DeidSettings:
    """Settings of an in-process service with one project ``research`` fed by ``tenant``."""
    project: dict[str, Any] = {
        "source_tenants": [tenant],
        "target_tenant": target,
        "key": PROJECT_KEY,
        "reidentification_map": True,
    }
    project.update(extra.pop("project", {}))
    return DeidSettings(
        grpc_port=0,
        shutdown_grace_s=1,
        storage_target=f"127.0.0.1:{storage_port}",
        database_url=f"sqlite:///{tmp_path}/deid-{uuid.uuid4().hex[:6]}.sqlite",
        reid_key=Fernet.generate_key().decode(),
        projects={"research": project},
        kafka=KafkaSettings(),
        **extra,
    )


DeidFactory = Callable[..., Awaitable[DeidApp]]


@pytest.fixture
async def start_deid(infra_env: dict[str, str]) -> AsyncIterator[DeidFactory]:
    """Start services with given settings; all are stopped at the end of the test."""
    apps: list[DeidApp] = []

    async def start(settings: DeidSettings) -> DeidApp:
        app = create_app(settings)
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop()


def deid_client(app: DeidApp, hydra: Hydra, tenant: str, roles: list[Role]) -> DeidClient:
    """A client of ``app`` with a token of ``tenant`` and ``roles``."""
    channel = open_channel(
        f"127.0.0.1:{app.grpc_port}",
        client_tls(),
        interceptors=bearer_interceptors(hydra.client(tenant, roles)),
    )
    return DeidClient(channel, timeout=120)


def storage_client(app: StorageApp) -> StorageClient:
    """A client of the storage service (as ``cli``)."""
    return StorageClient(open_channel(f"127.0.0.1:{app.grpc_port}", client_tls()), timeout=60)

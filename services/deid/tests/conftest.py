"""Fixtures of the de-identification service tests: the service in-process on a free port,
with a real storage service over the local S3 server, real Kafka, and bearer tokens from the
local hydra."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from pacs_deid.app import DeidApp, create_app
from pacs_deid.settings import DeidSettings
from pacs_storage.app import StorageApp
from pacs_testkit.storage import start_storage


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

"""Fixtures of the storage service tests: the service in-process on a free port, over the real
S3 server and Kafka of ``infra/up.sh``, reached through a real gRPC channel."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import pytest
from pacs_common.clients.storage import StorageClient
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls
from pacs_common.s3 import make_s3_client
from pacs_common.settings import KafkaSettings, S3Settings
from pacs_storage.app import StorageApp, create_app
from pacs_storage.settings import StorageSettings
from pacs_testkit.storage import remove_bucket
from storage_testkit import InstanceEvents


@pytest.fixture
def s3_settings(infra_env: dict[str, str], bucket_name: str) -> S3Settings:
    """The real S3 server, a fresh bucket of this test."""
    return S3Settings(bucket=bucket_name, max_attempts=2)


@pytest.fixture
def raw_s3(s3_settings: S3Settings) -> Iterator[Any]:
    """A plain boto3 client on the test's bucket (to look behind the service's back); the
    bucket and everything in it is removed afterwards."""
    client = make_s3_client(s3_settings)
    yield client
    remove_bucket(client, s3_settings.bucket)
    client.close()


@pytest.fixture
def storage_settings(s3_settings: S3Settings, raw_s3: Any) -> StorageSettings:
    """Settings of an in-process service on a free port."""
    return StorageSettings(
        grpc_port=0, s3=s3_settings, kafka=KafkaSettings(), kafka_retry_s=0.2, shutdown_grace_s=1
    )


AppFactory = Callable[..., Awaitable[StorageApp]]


@pytest.fixture
async def start_app() -> AsyncIterator[AppFactory]:
    """Start services with given settings; all are stopped at the end of the test."""
    apps: list[StorageApp] = []

    async def start(settings: StorageSettings) -> StorageApp:
        app = create_app(settings)
        apps.append(app)
        await app.start()
        return app

    yield start
    for app in apps:
        await app.stop()


@pytest.fixture
async def app(start_app: AppFactory, storage_settings: StorageSettings) -> StorageApp:
    """The storage service, started against the real infrastructure."""
    return await start_app(storage_settings)


@pytest.fixture
async def channel(app: StorageApp) -> AsyncIterator[grpc.aio.Channel]:
    """A real gRPC channel to the service."""
    chan = open_channel(f"127.0.0.1:{app.grpc_port}", client_tls())
    yield chan
    await chan.close()


@pytest.fixture
def client(channel: grpc.aio.Channel) -> StorageClient:
    """The client helper other services use."""
    return StorageClient(channel, timeout=60)


@pytest.fixture
async def events(infra_env: dict[str, str]) -> AsyncIterator[InstanceEvents]:
    """A consumer of pacs.instances.v1 positioned at the end before the test acts."""
    reader = InstanceEvents(KafkaSettings())
    await reader.start()
    yield reader
    await reader.stop()

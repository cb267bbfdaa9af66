"""Fixtures of the transcoder's tests."""

from __future__ import annotations

import sys
from pathlib import Path

# The tests' helper modules (transcoder_samples, transcoder_pixels, transcoder_events) sit
# beside them; their names are unique so that suites of several services can run together.
sys.path.insert(0, str(Path(__file__).parent))


import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from pacs_common.clients.storage import StorageClient
from pacs_common.clients.transcode import TranscodeClient
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls
from pacs_common.settings import KafkaSettings
from pacs_storage.app import StorageApp
from pacs_testkit.kafka import group_at_end_of_topic
from pacs_testkit.storage import storage_client_as, storage_on_own_bucket
from pacs_transcoder.app import TranscoderApp, create_app
from pacs_transcoder.settings import TranscoderSettings
from transcoder_events import InstanceEvents, TranscoderFactory


@pytest.fixture
async def storage(infra_env: dict[str, str], bucket_name: str) -> AsyncIterator[StorageApp]:
    """A real storage service on a bucket of this test (removed afterwards)."""
    async with storage_on_own_bucket(bucket_name, kafka_retry_s=0.2) as app:
        yield app


@pytest.fixture
async def start_transcoder(storage: StorageApp) -> AsyncIterator[TranscoderFactory]:
    """Start transcoders next to the test's storage; all stopped at the end."""
    apps: list[TranscoderApp] = []

    async def start(**settings: Any) -> TranscoderApp:
        values: dict[str, Any] = {
            "grpc_port": 0,
            "storage_target": f"127.0.0.1:{storage.grpc_port}",
            "shutdown_grace_s": 2,
            "consume_events": False,
            **settings,
        }
        if values["consume_events"]:
            group = values.setdefault("consumer_group", f"test-transcoder-{uuid.uuid4().hex[:8]}")
            await group_at_end_of_topic(group, KafkaSettings())
        app = create_app(TranscoderSettings(**values))
        apps.append(app)
        await app.start()
        return app

    yield start
    for app in apps:
        await app.stop()


@pytest.fixture
async def transcoder(start_transcoder: TranscoderFactory) -> TranscoderApp:
    """A transcoder without the on-store consumer."""
    return await start_transcoder()


@pytest.fixture
async def storage_client(storage: StorageApp) -> AsyncIterator[StorageClient]:
    """A client of the test's storage, as the gateway."""
    async with storage_client_as(storage, "gateway") as client:
        yield client


@pytest.fixture
async def channel_as() -> AsyncIterator[Callable[[TranscoderApp, str], grpc.aio.Channel]]:
    """Channels to a transcoder under a given mutual-TLS identity."""
    channels: list[grpc.aio.Channel] = []

    def make(app: TranscoderApp, identity: str) -> grpc.aio.Channel:
        channel = open_channel(f"127.0.0.1:{app.grpc_port}", client_tls(identity))
        channels.append(channel)
        return channel

    yield make
    for channel in channels:
        await channel.close()


@pytest.fixture
def client(
    transcoder: TranscoderApp, channel_as: Callable[[TranscoderApp, str], grpc.aio.Channel]
) -> TranscodeClient:
    """The transcoder's client, as the gateway (a trusted service)."""
    return TranscodeClient(channel_as(transcoder, "gateway"), timeout=120)


@pytest.fixture
async def instance_events(infra_env: dict[str, str]) -> AsyncIterator[InstanceEvents]:
    """pacs.instances.v1 from the moment the test starts."""
    reader = InstanceEvents()
    await reader.start()
    yield reader
    await reader.stop()

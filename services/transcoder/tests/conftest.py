"""Fixtures of the transcoder's tests."""

from __future__ import annotations

import sys
from pathlib import Path

# The tests' helper modules (samples, pixels) sit beside them.
sys.path.insert(0, str(Path(__file__).parent))


import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from pacs_common.clients.storage import StorageClient
from pacs_common.clients.transcode import TranscodeClient
from pacs_common.events import TOPIC_INSTANCES
from pacs_common.grpc_client import open_channel
from pacs_common.kafka_client import kafka_client_options
from pacs_common.local import client_tls
from pacs_common.s3 import make_s3_client
from pacs_common.settings import KafkaSettings, S3Settings
from pacs_storage.app import StorageApp
from pacs_testkit.kafka import group_at_end_of_topic
from pacs_testkit.storage import start_storage
from pacs_transcoder.app import TranscoderApp, create_app
from pacs_transcoder.settings import TranscoderSettings


@pytest.fixture
async def storage(infra_env: dict[str, str], bucket_name: str) -> AsyncIterator[StorageApp]:
    """A real storage service on a bucket of this test (removed afterwards)."""
    app = await start_storage(bucket_name, kafka_retry_s=0.2)
    yield app
    await app.stop()
    client = make_s3_client(S3Settings(bucket=bucket_name))
    with contextlib.suppress(Exception):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket_name):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket_name, Key=item["Key"])
        client.delete_bucket(Bucket=bucket_name)
    client.close()


TranscoderFactory = Callable[..., Awaitable[TranscoderApp]]


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
    channel = open_channel(f"127.0.0.1:{storage.grpc_port}", client_tls("gateway"))
    yield StorageClient(channel, timeout=60)
    await channel.close()


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


class InstanceEvents:
    """Reads pacs.instances.v1 from its end (positioned before the test acts)."""

    def __init__(self) -> None:
        self.kafka = KafkaSettings()
        self.consumer = AIOKafkaConsumer(
            **kafka_client_options(self.kafka),
            group_id=f"test-transcoder-read-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )

    async def start(self) -> None:
        admin = AIOKafkaAdminClient(**kafka_client_options(self.kafka))
        await admin.start()
        try:
            await admin.create_topics([NewTopic(TOPIC_INSTANCES, 3, 1)])
        except TopicAlreadyExistsError:
            pass
        finally:
            await admin.close()
        await self.consumer.start()
        partitions = None
        for _ in range(100):
            await self.consumer._client.force_metadata_update()
            partitions = self.consumer.partitions_for_topic(TOPIC_INSTANCES)
            if partitions:
                break
            await asyncio.sleep(0.1)
        assert partitions
        assigned = [TopicPartition(TOPIC_INSTANCES, p) for p in partitions]
        self.consumer.assign(assigned)
        await self.consumer.seek_to_end(*assigned)
        for tp in assigned:
            await self.consumer.position(tp)

    async def next(
        self, accept: Callable[[ConsumerRecord[bytes, bytes]], bool], within: float = 60.0
    ) -> ConsumerRecord[bytes, bytes]:
        """The next record ``accept`` approves."""

        async def wait() -> ConsumerRecord[bytes, bytes]:
            while True:
                record = await self.consumer.getone()
                if accept(record):
                    return record

        return await asyncio.wait_for(wait(), within)

    async def stop(self) -> None:
        await self.consumer.stop()


@pytest.fixture
async def instance_events(infra_env: dict[str, str]) -> AsyncIterator[InstanceEvents]:
    """pacs.instances.v1 from the moment the test starts."""
    reader = InstanceEvents()
    await reader.start()
    yield reader
    await reader.stop()

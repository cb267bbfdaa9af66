"""Fixtures of the router's tests: a real storage service on the local S3 and Kafka, routers
with a rules file of the test's own, and DCMTK ``storescp`` peers."""

from __future__ import annotations

import sys
from pathlib import Path

# The tests' helper module (router_peers) sits beside them; its name is unique so that suites
# of several services can run together.
sys.path.insert(0, str(Path(__file__).parent))

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest
from pacs_common.clients.storage import StorageClient
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls
from pacs_common.settings import KafkaSettings
from pacs_router.app import RouterApp, create_app
from pacs_router.settings import RouterSettings
from pacs_storage.app import StorageApp
from pacs_testkit.kafka import group_at_end_of_topic
from pacs_testkit.storage import storage_client_as, storage_on_own_bucket
from router_peers import RouterFactory, StoreScp


@pytest.fixture
async def storage(infra_env: dict[str, str], bucket_name: str) -> AsyncIterator[StorageApp]:
    """A real storage service on a bucket of this test (removed afterwards)."""
    async with storage_on_own_bucket(bucket_name, kafka_retry_s=0.2) as app:
        yield app


@pytest.fixture
async def storage_client(storage: StorageApp) -> AsyncIterator[StorageClient]:
    """A client of the test's storage, as the gateway (how instances arrive)."""
    async with storage_client_as(storage, "gateway") as client:
        yield client


@pytest.fixture
async def start_router(storage: StorageApp, tmp_path: Path) -> AsyncIterator[RouterFactory]:
    """Start routers next to the test's storage with the given rules (a dict written as the
    rules file); each test has its own topics and groups. All stopped at the end."""
    apps: list[RouterApp] = []
    run = uuid.uuid4().hex[:10]

    async def start(rules: dict[str, Any], **settings: Any) -> RouterApp:
        path = tmp_path / f"routes-{len(apps)}.json"
        path.write_text(json.dumps(rules))
        values: dict[str, Any] = {
            "grpc_port": 0,
            "rules_file": path,
            "storage_target": f"127.0.0.1:{storage.grpc_port}",
            "shutdown_grace_s": 2,
            "consumer_group": f"test-router-{run}",
            "sender_group_prefix": f"test-router-{run}-send-",
            "prefetch_group": f"test-router-{run}-prefetch",
            "topic_prefix": f"test.route.{run}.",
            "dimse_timeout_s": 20,
            "status_interval_s": 1,
            **settings,
        }
        await group_at_end_of_topic(values["consumer_group"], KafkaSettings())
        app = create_app(RouterSettings(**values))
        apps.append(app)
        await app.start()
        return app

    yield start
    for app in apps:
        await app.stop()


@pytest.fixture
def storescp() -> Iterator[Callable[..., StoreScp]]:
    """DCMTK storescp peers (not started: call ``.start()``); stopped at the end."""
    peers: list[StoreScp] = []

    def make(**kwargs: Any) -> StoreScp:
        peer = StoreScp(**kwargs)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.stop()


@pytest.fixture
async def channel_to() -> AsyncIterator[Callable[[RouterApp], grpc.aio.Channel]]:
    """Channels to a router as the CLI (mutual TLS)."""
    channels: list[grpc.aio.Channel] = []

    def make(app: RouterApp) -> grpc.aio.Channel:
        channel = open_channel(f"127.0.0.1:{app.grpc_port}", client_tls("cli"))
        channels.append(channel)
        return channel

    yield make
    for channel in channels:
        await channel.close()

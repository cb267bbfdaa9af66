"""A real storage service in-process for tests of the services that store through it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pacs_common.clients.storage import StorageClient
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls
from pacs_common.s3 import make_s3_client
from pacs_common.settings import S3Settings
from pacs_storage.app import StorageApp, create_app
from pacs_storage.settings import StorageSettings


async def start_storage(bucket: str, **settings: Any) -> StorageApp:
    """Start a storage service on a free port over ``bucket`` of the local S3 server (read
    from the environment, like every other setting); ``settings`` override further
    :class:`StorageSettings` fields. Stop it with ``await app.stop()``."""
    app = create_app(
        StorageSettings(
            grpc_port=0,
            s3=S3Settings(bucket=bucket),
            **{"shutdown_grace_s": 1, **settings},
        )
    )
    await app.start()
    return app


def remove_bucket(client: Any, bucket: str) -> None:
    """Delete every object of ``bucket`` and the bucket (best effort: a test's cleanup must not
    hide the test's own result)."""
    with contextlib.suppress(Exception):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)


@asynccontextmanager
async def storage_on_own_bucket(bucket: str, **settings: Any) -> AsyncIterator[StorageApp]:
    """:func:`start_storage` over ``bucket``; stopped, and the bucket removed, on exit."""
    app = await start_storage(bucket, **settings)
    try:
        yield app
    finally:
        await app.stop()
        client = make_s3_client(S3Settings(bucket=bucket))
        remove_bucket(client, bucket)
        client.close()


@asynccontextmanager
async def storage_client_as(app: StorageApp, identity: str) -> AsyncIterator[StorageClient]:
    """A client of ``app`` under the mutual-TLS ``identity`` (``gateway``: how instances
    arrive)."""
    channel = open_channel(f"127.0.0.1:{app.grpc_port}", client_tls(identity))
    try:
        yield StorageClient(channel, timeout=60)
    finally:
        await channel.close(None)

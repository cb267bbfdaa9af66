"""A real storage service in-process for tests of the services that store through it."""

from __future__ import annotations

from typing import Any

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

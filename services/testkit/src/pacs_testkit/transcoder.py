"""A real transcoder in-process for tests of the services that retrieve through it."""

from __future__ import annotations

from typing import Any

from pacs_transcoder.app import TranscoderApp, create_app
from pacs_transcoder.settings import TranscoderSettings


async def start_transcoder(storage_port: int, **settings: Any) -> TranscoderApp:
    """Start a transcoder on a free port reading through the storage service on
    ``storage_port``, without the on-store consumer unless ``settings`` turn it on. Stop it
    with ``await app.stop()``."""
    app = create_app(
        TranscoderSettings(
            grpc_port=0,
            storage_target=f"127.0.0.1:{storage_port}",
            **{"shutdown_grace_s": 1, "consume_events": False, **settings},
        )
    )
    await app.start()
    return app

"""Fixtures of the gateway tests: the gateway in-process, with the real storage and indexer
services (in-process too) on the real local infrastructure.

Storage and the indexer are started once per test module (their start-up is the slow part);
tests keep apart through tenants of their own. Test modules that use them run in the module's
event loop (``pytestmark = pytest.mark.asyncio(loop_scope="session")``), because their gRPC
servers live in it. The gateway itself runs its own event loop thread, so any test can start
one.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from gateway_helpers import closed_port
from pacs_gateway.app import GatewayApp, create_app
from pacs_gateway.settings import GatewaySettings
from pacs_testkit.indexer import start_indexer
from pacs_testkit.storage import start_storage
from pacs_testkit.transcoder import start_transcoder

GatewayFactory = Callable[..., Awaitable[GatewayApp]]


@pytest.fixture
def start_gateway() -> Iterator[GatewayFactory]:
    """Start gateways with settings overrides (free ports, loopback); stopped afterwards.

    Storage and the indexer default to closed ports: tests that need them pass targets.
    """
    apps: list[GatewayApp] = []

    async def start(**overrides: Any) -> GatewayApp:
        values: dict[str, Any] = {
            "dicom_port": 0,
            "grpc_port": 0,
            "storage_target": f"127.0.0.1:{closed_port()}",
            "indexer_target": f"127.0.0.1:{closed_port()}",
            "storage_timeout": 10,
            "query_timeout": 10,
            "shutdown_grace_s": 1,
            "workers": 1,
            "audit": {"enabled": False},  # tests of auditing turn it on
            "index_lag_max_events": 0,  # test_gateway_index_lag_cstore.py turns it on
        }
        values.update(overrides)
        app = create_app(GatewaySettings(**values))
        apps.append(app)
        await app.start()
        return app

    yield start
    for app in apps:
        app.close()


@pytest.fixture
def start_connected_gateway(
    start_gateway: GatewayFactory, storage_app: Any, indexer_app: Any, transcoder_app: Any
) -> GatewayFactory:
    """Start gateways like ``start_gateway``, storing through the session's storage service,
    querying its indexer and transcoding on retrieve through its transcoder."""

    async def start(**overrides: Any) -> GatewayApp:
        settings = {
            "storage_target": f"127.0.0.1:{storage_app.grpc_port}",
            "indexer_target": f"127.0.0.1:{indexer_app.grpc_port}",
            "transcoder_target": f"127.0.0.1:{transcoder_app.grpc_port}",
            **overrides,
        }
        return await start_gateway(**settings)

    return start


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def storage_app(infra_env: dict[str, str]) -> AsyncIterator[Any]:
    """The real storage service on a fresh bucket (one per test session)."""
    app = await start_storage(f"test-gw-{uuid.uuid4().hex[:16]}")
    yield app
    await app.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def transcoder_app(storage_app: Any) -> AsyncIterator[Any]:
    """The real transcoder reading through the session's storage (no on-store consumer)."""
    app = await start_transcoder(storage_app.grpc_port)
    yield app
    await app.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def indexer_app(
    storage_app: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Any]:
    """The real indexer (SQLite index) consuming the real storage events (one per session).

    The gateway queries it as an internal service on behalf of its authenticated DICOM callers,
    which the indexer recognises by the gateway's mTLS client certificate (trusted service
    ``gateway``); any other caller needs a bearer token.
    """
    from pacs_common.auth import AuthSettings  # noqa: PLC0415  (needs infra_env's env)

    app = await start_indexer(
        storage_app.grpc_port,
        tmp_path_factory.mktemp("index") / "index.sqlite",
        shutdown_grace_s=1,
        auth=AuthSettings(trusted_services={"gateway"}),
    )
    yield app
    await app.stop()

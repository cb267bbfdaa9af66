"""Fixtures of the hl7 tests: the hl7 service, the real storage, indexer and gateway services
(in-process) on the real local infrastructure (Kafka, S3).

Storage and the indexer start once per session; tests keep apart through tenants of their own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from pacs_common.events import TOPIC_WORKFLOW
from pacs_hl7.app import Hl7App, create_app
from pacs_hl7.settings import Hl7Settings
from pacs_testkit.indexer import start_indexer
from pacs_testkit.kafka import group_at_end_of_topic
from pacs_testkit.storage import start_storage


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def storage_app(infra_env: dict[str, str]) -> AsyncIterator[Any]:
    """The real storage service on a fresh bucket."""
    app = await start_storage(f"test-hl7-{uuid.uuid4().hex[:16]}")
    yield app
    await app.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def indexer_app(
    storage_app: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Any]:
    """The real indexer consuming storage and workflow events; it trusts the gateway and the
    tests' ``cli`` identity as internal services."""
    from pacs_common.auth import AuthSettings  # noqa: PLC0415  (needs infra_env's env)

    app = await start_indexer(
        storage_app.grpc_port,
        tmp_path_factory.mktemp("index") / "index.sqlite",
        shutdown_grace_s=1,
        auth=AuthSettings(trusted_services={"gateway", "cli"}),
    )
    yield app
    await app.stop()


Hl7Factory = Callable[..., Awaitable[Hl7App]]


@pytest_asyncio.fixture(loop_scope="session")
async def start_hl7(infra_env: dict[str, str]) -> AsyncIterator[Hl7Factory]:
    """Start hl7 services (free ports) with settings overrides; stopped afterwards."""
    apps: list[Hl7App] = []

    async def start(**overrides: Any) -> Hl7App:
        values: dict[str, Any] = {"grpc_port": 0, "mllp_port": 0, "shutdown_grace_s": 2}
        if overrides.get("oru_host"):
            group = f"test-hl7-oru-{uuid.uuid4().hex[:12]}"
            from pacs_common.settings import KafkaSettings  # noqa: PLC0415

            await group_at_end_of_topic(group, KafkaSettings(), TOPIC_WORKFLOW)
            values["consumer_group"] = group
        values.update(overrides)
        app = create_app(Hl7Settings(**values))
        apps.append(app)
        await app.start()
        return app

    yield start
    for app in apps:
        await app.stop()


@pytest.fixture
def gateway_factory(storage_app: Any, indexer_app: Any) -> Iterator[Callable[..., Any]]:
    """Start gateways connected to the session's storage and indexer."""
    from pacs_gateway.app import create_app as create_gateway  # noqa: PLC0415
    from pacs_gateway.settings import GatewaySettings  # noqa: PLC0415

    apps: list[Any] = []

    async def start(**overrides: Any) -> Any:
        values: dict[str, Any] = {
            "dicom_port": 0,
            "grpc_port": 0,
            "storage_target": f"127.0.0.1:{storage_app.grpc_port}",
            "indexer_target": f"127.0.0.1:{indexer_app.grpc_port}",
            "storage_timeout": 10,
            "query_timeout": 10,
            "shutdown_grace_s": 1,
            "workers": 1,
        }
        values.update(overrides)
        app = create_gateway(GatewaySettings(**values))
        apps.append(app)
        await app.start()
        return app

    yield start
    for app in apps:
        app.close()

"""Fixtures of the DICOMweb tests: the service in-process over the real storage and indexer
(in-process too) on the real local infrastructure, driven over HTTP by real clients.

Storage and the indexer start once per session; tests keep apart through tenants of their own
(bearer tokens from the local hydra name the tenant). Test modules run in the session's event
loop (``pytestmark = pytest.mark.asyncio(loop_scope="session")``) because the servers live in
it; synchronous clients (dicomweb-client, requests) run in threads (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from dicomweb_client.api import DICOMwebClient
from dicomweb_helpers import eventually
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_common.grpc_client import open_channel
from pacs_common.tls import TlsSettings
from pacs_testkit.hydra import Hydra
from pacs_testkit.indexer import start_indexer
from pacs_testkit.storage import start_storage

ALL_ROLES = ("ingest", "query", "retrieve", "admin")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def storage_app(infra_env: dict[str, str]) -> AsyncIterator[Any]:
    """The real storage service on a fresh bucket (one per test session)."""
    app = await start_storage(f"test-dw-{uuid.uuid4().hex[:16]}")
    yield app
    await app.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def indexer_app(
    storage_app: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Any]:
    """The real indexer consuming the real storage events; it trusts the ``dicomweb``
    identity (mTLS) to name the tenant, as it trusts the gateway."""
    from pacs_common.auth import AuthSettings  # noqa: PLC0415  (needs infra_env's env)

    app = await start_indexer(
        storage_app.grpc_port,
        tmp_path_factory.mktemp("index") / "index.sqlite",
        shutdown_grace_s=1,
        auth=AuthSettings(trusted_services={"dicomweb"}),
    )
    yield app
    await app.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def dicomweb_app(storage_app: Any, indexer_app: Any) -> AsyncIterator[Any]:
    """The DICOMweb service on a free port (loopback callers without a token: tenant
    ``default``; the tests use tokens of their own tenants)."""
    from pacs_dicomweb.app import create_app  # noqa: PLC0415
    from pacs_dicomweb.settings import DicomwebSettings  # noqa: PLC0415

    app = create_app(
        DicomwebSettings(
            http_port=0,
            grpc_port=0,
            storage_target=f"127.0.0.1:{storage_app.grpc_port}",
            indexer_target=f"127.0.0.1:{indexer_app.grpc_port}",
            shutdown_grace_s=1,
            cors_origins=["http://viewer.example"],
        )
    )
    await app.start()
    yield app
    await app.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def storage_client(storage_app: Any) -> AsyncIterator[StorageClient]:
    """A StorageClient (identity ``cli``) to put test data the way the gateway does."""
    tls = TlsSettings().as_identity("cli")
    channel = open_channel(f"127.0.0.1:{storage_app.grpc_port}", tls)
    yield StorageClient(channel, timeout=60)
    await channel.close()


@pytest.fixture
def token(hydra: Hydra, tenant: str) -> str:
    """A bearer token of the test's tenant with every role."""
    return hydra.token(tenant, ALL_ROLES)


@pytest.fixture
def client(dicomweb_app: Any, token: str) -> DICOMwebClient:
    """dicomweb-client (PyPI) against the service, as the test's tenant."""
    return DICOMwebClient(url=dicomweb_app.url, headers={"Authorization": f"Bearer {token}"})


Store = Callable[[list[bytes]], Awaitable[None]]


@pytest.fixture
def store(storage_client: StorageClient, client: DICOMwebClient, tenant: str) -> Store:
    """Put Part 10 objects through storage (as C-STORE does) and wait until QIDO finds them."""

    async def put(objects: list[bytes]) -> None:
        studies: dict[str, int] = {}
        for data in objects:
            ref = instance_ref_of(data, tenant)
            await storage_client.put(ref, data)
            studies[ref.study_instance_uid] = studies.get(ref.study_instance_uid, 0) + 1

        async def indexed() -> bool:
            for study, count in studies.items():
                found = await asyncio.to_thread(
                    client.search_for_instances, study_instance_uid=study
                )
                if len(found) < count:
                    return False
            return True

        assert await eventually(indexed), "the stored instances were not indexed in time"

    return put

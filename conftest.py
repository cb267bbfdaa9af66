"""Fixtures shared by every test: the real local infrastructure started by ``infra/up.sh``
(Kafka, S3, PostgreSQL, and hydra for bearer tokens).

Integration tests never mock Kafka, S3 or the database. They read the endpoints from
``.cache/run/infra.env`` (written by ``infra/up.sh``) or the environment, and fail with a clear
message when the infrastructure is not running.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
from pacs_common.local import ensure_local_pki, infra_environment
from pacs_testkit.hydra import Hydra
from pacs_testkit.postgres import DEFAULT_URL, scratch_database


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session", autouse=True)
def local_pki() -> str:
    """The local CA and certificates (as ``make up`` makes them), named by ``PACS_TLS_DIR`` for
    every service and client the tests create: mutual TLS is on in tests as everywhere."""
    directory = str(ensure_local_pki())
    os.environ.setdefault("PACS_TLS_DIR", directory)
    return directory


@pytest.fixture(scope="session")
def infra_env() -> dict[str, str]:
    """Endpoints of the running infrastructure; fails if Kafka or S3 is not reachable."""
    env = infra_environment()
    kafka = env.get("PACS_KAFKA_BOOTSTRAP", "127.0.0.1:19092").split(",")[0]
    host, _, port = kafka.rpartition(":")
    s3 = urlparse(env.get("PACS_S3_ENDPOINT", "http://127.0.0.1:17070"))
    missing = []
    if not _reachable(host, int(port)):
        missing.append(f"Kafka at {kafka}")
    if not _reachable(s3.hostname or "127.0.0.1", s3.port or 80):
        missing.append(f"S3 at {s3.geturl()}")
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not reachable: start the infrastructure with "
            "`infra/up.sh` (or `make up`) before running integration tests",
            pytrace=False,
        )
    for key, value in env.items():
        os.environ.setdefault(key, value)
    return env


@pytest.fixture
def tenant() -> str:
    """A tenant name of its own for each test, so tests never see each other's data."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def bucket_name() -> str:
    """A fresh bucket name per test (S3 naming rules: lowercase, 3-63 chars)."""
    return f"test-{uuid.uuid4().hex[:20]}"


@pytest.fixture
def postgres_url(infra_env: dict[str, str]) -> Iterator[str]:
    """URL of a fresh PostgreSQL database per test on the project's local cluster."""
    with scratch_database(infra_env.get("PACS_TEST_POSTGRES_URL", DEFAULT_URL)) as url:
        yield url


@pytest.fixture(scope="session")
def hydra(infra_env: dict[str, str]) -> Hydra:
    """The local OpenID provider: bearer tokens for a tenant and roles (client credentials)."""
    provider = Hydra(infra_env)
    if not provider.reachable():
        pytest.fail(
            f"hydra not reachable at {provider.admin_url}: start the infrastructure with "
            "`infra/up.sh` (or `make up`)",
            pytrace=False,
        )
    return provider


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that needs the running infrastructure is an integration test.

    Marking by the fixture it asks for (directly or through other fixtures) rather than by
    hand keeps ``make test-unit`` (``-m "not integration and not e2e"``) honest: a test that
    starts using Kafka, S3 or PostgreSQL leaves the unit run without anyone remembering to
    mark it.
    """
    for item in items:
        if "infra_env" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)

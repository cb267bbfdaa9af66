"""Fixtures of the indexer tests: an index database on SQLite and on PostgreSQL, and a helper
that indexes synthetic instances through the same upsert the event handler uses.

Tests that only read and write their own tenant's rows share one migrated PostgreSQL database
per session (every test has a tenant of its own, and tenant isolation is itself under test);
tests of the schema itself get a fresh database each (``fresh_database``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from indexer_helpers import Catalog
from pacs_indexer.database import Database
from pacs_testkit.postgres import DEFAULT_URL, scratch_database

# The PostgreSQL variant needs the project's local cluster: an integration test.
POSTGRESQL = pytest.param("postgresql", marks=pytest.mark.integration)


@pytest.fixture(scope="session")
def shared_postgres(infra_env: dict[str, str]) -> Iterator[Database]:
    """One migrated PostgreSQL index for the whole session, dropped at the end."""
    url = infra_env.get("PACS_TEST_POSTGRES_URL", DEFAULT_URL)
    with scratch_database(url, prefix="test_indexer") as scratch_url:
        database = Database(scratch_url)
        database.create_schema()
        yield database
        database.dispose()


@pytest.fixture(params=["sqlite", POSTGRESQL])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An index on each backend: a fresh SQLite file, or the session's PostgreSQL database."""
    if request.param == "postgresql":
        yield request.getfixturevalue("shared_postgres")
        return
    db = Database(f"sqlite:///{tmp_path / 'index.sqlite'}")
    db.create_schema()
    yield db
    db.dispose()


@pytest.fixture(params=["sqlite", POSTGRESQL])
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database (no schema) on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    db = Database(url)
    yield db
    db.dispose()


@pytest.fixture
def catalog(database: Database) -> Catalog:
    """The helper over the parametrised database."""
    return Catalog(database)

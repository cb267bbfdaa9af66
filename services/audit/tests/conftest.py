"""Fixtures of the audit service tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pacs_audit.checkpoints import Checkpointer
from pacs_audit.trail import Trail


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def trail(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Trail]:
    """An empty trail in a SQLite file, or in a scratch PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    store = Trail(url)
    store.create_schema()
    yield store
    store.dispose()


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    """A fresh checkpoint signing key."""
    return Ed25519PrivateKey.generate()


@pytest.fixture
def checkpointer(trail: Trail, signing_key: Ed25519PrivateKey) -> Checkpointer:
    """Signs a checkpoint every 5 records."""
    return Checkpointer(trail, signing_key, every=5)

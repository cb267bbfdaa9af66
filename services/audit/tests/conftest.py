"""Fixtures of the audit service tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pacs_audit.checkpoints import Checkpointer
from pacs_audit.trail import Trail


@pytest.fixture
def trail(tmp_path: Path) -> Trail:
    """An empty trail in a SQLite file."""
    store = Trail(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    store.create_schema()
    return store


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    """A fresh checkpoint signing key."""
    return Ed25519PrivateKey.generate()


@pytest.fixture
def checkpointer(trail: Trail, signing_key: Ed25519PrivateKey) -> Checkpointer:
    """Signs a checkpoint every 5 records."""
    return Checkpointer(trail, signing_key, every=5)

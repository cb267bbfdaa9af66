"""The re-identification map on both databases it supports (SQLite file, the local PostgreSQL):
idempotent writes, lookups, nothing readable without the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pacs_common.errors import DataLossError
from pacs_deid.reid_map import Original, ReidentificationMap
from sqlalchemy import text


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/map.sqlite"
    return str(request.getfixturevalue("postgres_url"))


def test_record_and_lookup(url: str) -> None:
    key = Fernet.generate_key()
    store = ReidentificationMap(url, key)
    store.create_schema()
    entries = [
        ("ANON0123", Original("patient", "MRN-77", "Doe^Jane")),
        ("2.25.1", Original("uid", "1.2.3.4")),
    ]
    store.record("p", entries)
    store.record("p", entries)  # again: idempotent
    assert store.lookup("p", "ANON0123") == Original("patient", "MRN-77", "Doe^Jane")
    assert store.lookup("p", "2.25.1") == Original("uid", "1.2.3.4", "")
    assert store.lookup("other", "ANON0123") is None
    with store.engine.connect() as connection:
        rows = connection.execute(text("SELECT original FROM reidentification_map")).all()
    assert len(rows) == 2 and not any("MRN-77" in r[0] or "Doe" in r[0] for r in rows)
    store.close()

    wrong = ReidentificationMap(url, Fernet.generate_key())
    with pytest.raises(DataLossError):
        wrong.lookup("p", "ANON0123")
    wrong.close()

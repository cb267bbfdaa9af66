"""The engine every database-keeping service shares (``pacs_common.sql.make_engine``), on the
project's real PostgreSQL: a commit is durable before it returns, whatever the server's
default (a crash of PostgreSQL must not lose rows a service already reported as kept)."""

from __future__ import annotations

import pytest
from pacs_common.sql import make_engine
from sqlalchemy import text

pytestmark = pytest.mark.integration


def _synchronous_commit_with(postgres_url: str, server_default: str) -> str:
    """The session's ``synchronous_commit`` when the server's default is ``server_default``
    (given to the session as a start-up option, as a server setting would be)."""
    engine = make_engine(
        postgres_url,
        postgres_options={"connect_args": {"options": f"-c synchronous_commit={server_default}"}},
    )
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            connection.rollback()  # what a failed unit of work does: the setting must stay
            return str(connection.execute(text("SHOW synchronous_commit")).scalar_one())
    finally:
        engine.dispose()


def test_commits_wait_for_their_wal_when_the_server_default_does_not(postgres_url: str) -> None:
    assert _synchronous_commit_with(postgres_url, "off") == "on"


@pytest.mark.parametrize("stronger", ["local", "on", "remote_write", "remote_apply"])
def test_an_operators_own_durable_setting_is_kept(postgres_url: str, stronger: str) -> None:
    assert _synchronous_commit_with(postgres_url, stronger) == stronger

"""An end-to-end stack: the real services as processes on free ports, over the real
infrastructure started by ``infra/up.sh``, driven with DCMTK and gRPC clients.

Every test of the stack runs twice: with the indexer on SQLite (the embedded default) and on
PostgreSQL (a scratch database on the local cluster), the two databases it supports.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pacs_testkit.postgres import DEFAULT_URL, scratch_database

from tests.e2e.e2e_support import RunningStack, running_stack


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def e2e_stack(
    request: pytest.FixtureRequest,
    infra_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningStack]:
    """Start storage, indexer and gateway as processes; stop them afterwards."""
    run_dir = tmp_path_factory.mktemp(f"stack-{request.param}")
    if request.param == "sqlite":
        with running_stack(infra_env, run_dir) as stack:
            yield stack
        return
    url = infra_env.get("PACS_TEST_POSTGRES_URL", DEFAULT_URL)
    with (
        scratch_database(url, prefix="e2e") as database_url,
        running_stack(infra_env, run_dir, {"PACS_INDEXER_DATABASE_URL": database_url}) as stack,
    ):
        yield stack

"""The `pacs` CLI authenticates to QueryService with its client-credentials token.

The indexer runs in-process and requires tokens (the local stack's indexer also trusts the
gateway's token-less calls until mTLS, so the end-to-end test alone would not show the token);
the CLI runs as a process, as a user runs it, with its credentials in the environment. This
indexer does not reach storage, so a call that passes authorization ends in
FAILED_PRECONDITION.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pacs_cli.credentials import cli_settings
from pacs_common.auth import Role
from pacs_indexer.app import IndexerApp, create_app
from pacs_indexer.settings import IndexerSettings
from pacs_testkit.hydra import Hydra

pytestmark = pytest.mark.integration


@pytest.fixture
async def indexer(infra_env: dict[str, str], tmp_path: Path) -> AsyncIterator[IndexerApp]:
    app = create_app(
        IndexerSettings(
            grpc_port=0,
            database_url=f"sqlite:///{tmp_path / 'index.sqlite'}",
            consume_events=False,
            shutdown_grace_s=1,
        )
    )
    await app.start()
    yield app
    await app.stop()


async def _pacs(indexer: IndexerApp, env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pacs_cli",
        *args,
        "--indexer",
        f"127.0.0.1:{indexer.grpc_port}",
        env={**os.environ, "COLUMNS": "250", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode()


def _env_of(hydra: Hydra, tenant: str, roles: list[Role]) -> dict[str, str]:
    client = hydra.client(tenant, roles)
    return {
        "PACS_CLI_CLIENT_ID": client.client_id,
        "PACS_CLI_CLIENT_SECRET": client._secret.get_secret_value(),
        "PACS_CLI_TOKEN_URL": hydra.token_url,
    }


async def test_the_provisioned_admin_client_passes_authorization(indexer: IndexerApp) -> None:
    assert cli_settings().client_id, "infra/up.sh provisions PACS_CLI_CLIENT_ID"
    code, out = await _pacs(indexer, {}, "index", "check", "--tenant", "default")
    assert code == 1
    assert "FAILED_PRECONDITION" in out, out
    code, out = await _pacs(indexer, {}, "reindex")
    assert "FAILED_PRECONDITION" in out, out


async def test_a_client_without_admin_or_of_another_tenant_is_refused(
    indexer: IndexerApp, hydra: Hydra, tenant: str
) -> None:
    query_only = _env_of(hydra, tenant, [Role.QUERY])
    code, out = await _pacs(indexer, query_only, "index", "check")
    assert (code, "PERMISSION_DENIED" in out) == (1, True), out

    admin = _env_of(hydra, tenant, [Role.ADMIN])
    code, out = await _pacs(indexer, admin, "index", "check", "--tenant", f"{tenant}-other")
    assert (code, "PERMISSION_DENIED" in out) == (1, True), out
    code, out = await _pacs(indexer, admin, "index", "check")
    assert "FAILED_PRECONDITION" in out, out


async def test_wrong_credentials_get_no_token(indexer: IndexerApp, hydra: Hydra, tenant: str):
    wrong = {**_env_of(hydra, tenant, [Role.ADMIN]), "PACS_CLI_CLIENT_SECRET": "not-the-secret"}
    code, out = await _pacs(indexer, wrong, "index", "check")
    assert code == 1
    assert "no bearer token" in out and "refused client" in out, out

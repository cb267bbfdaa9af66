"""``pacs route status`` run as a process, as an operator runs it, against a real router whose
destination is down: the queue, the retries and the last error are visible, and once the
destination is back, the sent count and the last success."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable

from pacs_common.auth import Role
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import instance_ref_of
from pacs_router.app import RouterApp
from pacs_testkit.hydra import Hydra
from router_peers import RouterFactory, StoreScp, dimse, eventually, sample


async def _pacs(app: RouterApp, env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pacs_cli", "route", "status", *args,
        "--router", f"127.0.0.1:{app.grpc_port}",
        env={**os.environ, "COLUMNS": "250", **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode() + err.decode()


def _env_of(hydra: Hydra, tenant: str, roles: list[Role]) -> dict[str, str]:
    client = hydra.client(tenant, roles)
    return {
        "PACS_CLI_CLIENT_ID": client.client_id,
        "PACS_CLI_CLIENT_SECRET": client._secret.get_secret_value(),
        "PACS_CLI_TOKEN_URL": hydra.token_url,
    }


async def test_route_status_shows_a_stuck_queue_then_its_recovery(
    start_router: RouterFactory,
    storage_client: StorageClient,
    storescp: Callable[..., StoreScp],
    hydra: Hydra,
    tenant: str,
) -> None:
    peer = storescp()  # down
    app = await start_router(
        {
            "destinations": {"site-b": dimse(peer)},
            "tenants": {tenant: [{"name": "all", "destinations": ["site-b"]}]},
        }
    )
    for _ in range(2):
        part10 = sample()
        await storage_client.put(instance_ref_of(part10, tenant), part10)
    admin = _env_of(hydra, tenant, [Role.ADMIN])

    async def stuck() -> dict[str, object] | None:
        code, out = await _pacs(app, admin, "--json")
        assert code == 0, out
        row: dict[str, object] = json.loads(out.strip().splitlines()[-1])
        return row if row["queued"] == 2 and row["last_error"] else None

    row = await eventually(stuck, what="two queued instances and an error in the status")
    assert row["name"] == "site-b"
    assert row["sent"] == 0
    assert row["address"] == f"REMOTE@127.0.0.1:{peer.port}"

    code, out = await _pacs(app, admin)
    assert code == 0
    assert "site-b" in out
    assert "never" in out  # no success yet
    assert "cannot connect" in out, out

    peer.start()

    async def recovered() -> dict[str, object] | None:
        _, out = await _pacs(app, admin, "--json")
        row: dict[str, object] = json.loads(out.strip().splitlines()[-1])
        return row if row["queued"] == 0 and row["sent"] == 2 else None

    row = await eventually(recovered, within=180, what="the queue drained")
    assert row["last_success_time"]

    code, out = await _pacs(app, _env_of(hydra, tenant, [Role.QUERY]))
    assert code == 2
    assert "PERMISSION_DENIED" in out
    assert "role admin" in out

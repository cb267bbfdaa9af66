"""``pacs reindex`` and ``pacs index check``: rebuild or verify a tenant's index from storage
through the indexer's QueryService, over mutual TLS as identity ``cli`` and with the CLI's
bearer token (role ``admin``; see :mod:`pacs_cli.credentials`)."""

from __future__ import annotations

import asyncio

import grpc
import typer
from pacs.query.v1 import query_service_pb2 as pb
from pacs_common.clients.query import QueryClient
from pacs_common.errors import PacsError, UnavailableError
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls
from pacs_common.oauth_client import bearer_interceptors
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from pacs_cli.credentials import cli_credentials

console = Console()
index_app = typer.Typer(help="Inspect the index.", no_args_is_help=True)

INDEXER_OPTION = typer.Option("127.0.0.1:50052", help="host:port of the indexer's QueryService")
TENANT_HELP = "; default: the tenant of the CLI's credentials"


def _fail(exc: PacsError, target: str) -> typer.Exit:
    console.print(f"[red]indexer at {target} answered {exc.code.name}: {exc.message}[/red]")
    if isinstance(exc, UnavailableError):
        console.print("Is the stack running? Start it with `pacs up` (or pass --indexer).")
    elif exc.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        console.print("Check PACS_CLI_CLIENT_ID/SECRET (an admin client of that tenant).")
    return typer.Exit(1)


def _indexer(target: str) -> grpc.aio.Channel:
    """A channel to the indexer that presents the CLI's certificate and bearer token.

    The first token is fetched here, before any call: a refusal by the token endpoint is then
    reported as what it is, not as the indexer's answer.
    """
    credentials = cli_credentials()
    try:
        credentials.token()
    except PacsError as exc:
        console.print(f"[red]no bearer token: {exc.message}[/red]")
        console.print("Check PACS_CLI_CLIENT_ID/SECRET (an admin client of that tenant).")
        raise typer.Exit(1) from exc
    return open_channel(target, client_tls(), interceptors=bearer_interceptors(credentials))


async def _reindex(tenant: str, target: str) -> pb.ReindexResponse:
    async with _indexer(target) as channel:
        last = pb.ReindexResponse()
        columns = [*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, BarColumn(bar_width=None), console=console) as progress:
            task = progress.add_task(f"reindexing {tenant or 'tenant'}", total=None)
            async for last in QueryClient(channel).reindex(tenant):
                progress.update(task, total=last.total, completed=last.processed + last.failed)
        return last


async def _check(tenant: str, target: str, max_listed: int) -> pb.CheckIndexResponse:
    async with _indexer(target) as channel:
        return await QueryClient(channel).check_index(tenant, max_listed)


def reindex(
    tenant: str = typer.Option("", help=f"tenant whose index is rebuilt{TENANT_HELP}"),
    indexer: str = INDEXER_OPTION,
) -> None:
    """Rebuild a tenant's index from what storage holds (idempotent; safe to rerun)."""
    try:
        last = asyncio.run(_reindex(tenant, indexer))
    except PacsError as exc:
        raise _fail(exc, indexer) from exc
    console.print(f"{last.processed} of {last.total} instances indexed, {last.failed} failed")
    if last.failed:
        console.print("See the indexer's log for why; `pacs index check` lists what is missing.")
        raise typer.Exit(1)


@index_app.command("check")
def check(
    tenant: str = typer.Option("", help=f"tenant to compare{TENANT_HELP}"),
    indexer: str = INDEXER_OPTION,
    max_listed: int = typer.Option(20, help="discrepancies listed of each kind"),
) -> None:
    """Report instances in storage but not indexed, and indexed but not in storage."""
    try:
        result = asyncio.run(_check(tenant, indexer, max_listed))
    except PacsError as exc:
        raise _fail(exc, indexer) from exc
    console.print(
        f"tenant {tenant or '(of the credentials)'}: {result.stored_count} in storage, "
        f"{result.indexed_count} indexed; "
        f"{result.not_indexed_count} not indexed, {result.not_in_storage_count} not in storage"
    )
    for title, refs in (
        ("in storage, not indexed", result.not_indexed),
        ("indexed, not in storage", result.not_in_storage),
    ):
        if refs:
            table = Table(title=title)
            for column in ("study", "series", "SOP instance"):
                table.add_column(column, overflow="fold")  # UIDs are copied whole, never cut
            for ref in refs:
                table.add_row(ref.study_instance_uid, ref.series_instance_uid, ref.sop_instance_uid)
            console.print(table)
    if result.not_indexed_count or result.not_in_storage_count:
        console.print(f"Repair with `pacs reindex{f' --tenant {tenant}' if tenant else ''}`.")
        raise typer.Exit(1)

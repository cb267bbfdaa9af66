"""``pacs reindex`` and ``pacs index check``: rebuild or verify a tenant's index from storage
through the indexer's QueryService, over mutual TLS as identity ``cli`` and with the CLI's
bearer token (role ``admin``; see :mod:`pacs_cli.credentials`)."""

from __future__ import annotations

import asyncio

import typer
from pacs.query.v1 import query_service_pb2 as pb
from pacs_common.clients.query import QueryClient
from pacs_common.errors import PacsError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from pacs_cli.remote import INDEXER

console = Console()
index_app = typer.Typer(help="Inspect the index.", no_args_is_help=True)

INDEXER_OPTION = typer.Option("127.0.0.1:50052", help="host:port of the indexer's QueryService")
TENANT_HELP = "; default: the tenant of the CLI's credentials"


async def _reindex(tenant: str, target: str) -> pb.ReindexResponse:
    async with INDEXER.channel(target) as channel:
        last = pb.ReindexResponse()
        columns = [*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, BarColumn(bar_width=None), console=console) as progress:
            task = progress.add_task(f"reindexing {tenant or 'tenant'}", total=None)
            async for last in QueryClient(channel).reindex(tenant):
                progress.update(task, total=last.total, completed=last.processed + last.failed)
        return last


async def _check(tenant: str, target: str, max_listed: int) -> pb.CheckIndexResponse:
    async with INDEXER.channel(target) as channel:
        return await QueryClient(channel).check_index(tenant, max_listed)


def reindex(
    tenant: str = typer.Option("", help=f"tenant whose index is rebuilt{TENANT_HELP}"),
    indexer: str = INDEXER_OPTION,
) -> None:
    """Rebuild a tenant's index from what storage holds (idempotent; safe to rerun)."""
    try:
        last = asyncio.run(_reindex(tenant, indexer))
    except PacsError as exc:
        raise INDEXER.failure(exc, indexer) from exc
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
        raise INDEXER.failure(exc, indexer) from exc
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

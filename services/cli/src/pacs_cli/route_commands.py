"""``pacs route status``: each routing destination's queue and sender, from the router's
RouterService over mutual TLS as identity ``cli`` with the CLI's bearer token (role
``admin``)."""

from __future__ import annotations

import asyncio
import json

import typer
from pacs.router.v1 import router_service_pb2 as pb
from pacs_common.clients.router import RouterClient
from pacs_common.errors import PacsError
from rich.console import Console
from rich.table import Table

from pacs_cli.remote import ROUTER

console = Console()
route_app = typer.Typer(help="Routing to other facilities.", no_args_is_help=True)

ROUTER_OPTION = typer.Option("127.0.0.1:50059", help="host:port of the router")


async def _status(target: str) -> list[pb.DestinationStatus]:
    async with ROUTER.channel(target) as channel:
        return await RouterClient(channel, timeout=60).status()


def destination_json(destination: pb.DestinationStatus) -> dict[str, object]:
    """One destination as ``pacs route status --json`` prints it."""
    return {
        "name": destination.name,
        "kind": destination.kind,
        "address": destination.address,
        "queued": destination.queued,
        "sent": destination.sent,
        "failed": destination.failed,
        "retries": destination.retries,
        "last_success_time": destination.last_success_time,
        "last_error": destination.last_error,
        "last_error_time": destination.last_error_time,
    }


@route_app.command("status")
def status(
    as_json: bool = typer.Option(False, "--json", help="one JSON object per destination"),
    router: str = ROUTER_OPTION,
) -> None:
    """Per destination: instances queued, sent and refused, the last success and last error.

    Sent/failed/retries count since the router started; queued is Kafka's (survives restarts).
    """
    try:
        destinations = asyncio.run(_status(router))
    except PacsError as exc:
        raise ROUTER.failure(exc, router) from exc
    if as_json:
        for destination in destinations:
            typer.echo(json.dumps(destination_json(destination), separators=(",", ":")))
        return
    if not destinations:
        console.print("no destinations: the rules file sends this tenant's instances nowhere")
        return
    table = Table("destination", "kind", "address", "queued", "sent", "failed", "retries",
                  "last success", "last error")  # fmt: skip
    for d in destinations:
        error = f"{d.last_error_time} {d.last_error}".strip()
        queued = f"[yellow]{d.queued}[/yellow]" if d.queued else "0"
        failed = f"[red]{d.failed}[/red]" if d.failed else "0"
        table.add_row(
            d.name, d.kind, d.address, queued, str(d.sent), failed, str(d.retries),
            d.last_success_time or "never", error or "-",
        )  # fmt: skip
    console.print(table)

"""How a ``pacs`` command reaches one of the platform's gRPC services, and how it reports
the service's refusal: one place, so that every command says the same things the same way.

A command opens an authorized channel (mutual TLS as identity ``cli`` plus the CLI's bearer
token, see :mod:`pacs_cli.credentials`) and turns a :class:`PacsError` into a message naming
the service, its answer, and what to check next.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import typer
from pacs_common.errors import PacsError, UnavailableError
from pacs_common.grpc_client import open_channel
from pacs_common.local import client_tls
from pacs_common.oauth_client import bearer_interceptors
from rich.console import Console

from pacs_cli.credentials import cli_credentials

console = Console()


@dataclass(frozen=True)
class RemoteService:
    """A service the CLI calls, and the hints its errors carry."""

    name: str
    """How messages name it: ``indexer``, ``audit service``, ``router``."""
    start_hint: str
    """What to do when it cannot be reached (``Start it with `pacs up` (or pass --indexer).``)."""
    client_hint: str
    """Which client the CLI's credentials must be (``an admin client of that tenant``)."""
    exit_code: int
    """The command's exit status when the service refuses or cannot be reached."""

    def channel(self, target: str) -> grpc.aio.Channel:
        """A channel to ``target`` presenting the CLI's certificate and bearer token.

        The first token is fetched here, before any call: a refusal by the token endpoint is
        then reported as what it is, not as the service's answer.
        """
        credentials = cli_credentials()
        try:
            credentials.token()
        except PacsError as exc:
            console.print(f"[red]no bearer token: {exc.message}[/red]")
            console.print(self._credentials_hint())
            raise typer.Exit(self.exit_code) from exc
        return open_channel(target, client_tls(), interceptors=bearer_interceptors(credentials))

    def failure(self, exc: PacsError, target: str) -> typer.Exit:
        """Print the service's answer and the next step; the exit to raise."""
        console.print(f"[red]{self.name} at {target} answered {exc.code.name}: {exc.message}[/red]")
        if isinstance(exc, UnavailableError):
            console.print(f"Is the {self.name} running? {self.start_hint}")
        elif exc.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            console.print(self._credentials_hint())
        return typer.Exit(self.exit_code)

    def _credentials_hint(self) -> str:
        return f"Check PACS_CLI_CLIENT_ID/SECRET ({self.client_hint})."


INDEXER = RemoteService(
    name="indexer",
    start_hint="Start it with `pacs up` (or pass --indexer).",
    client_hint="an admin client of that tenant",
    exit_code=1,
)
AUDIT = RemoteService(
    name="audit service",
    start_hint="Start it with `pacs up` (or pass --audit).",
    client_hint="a client with the role audit-read",
    exit_code=2,
)
ROUTER = RemoteService(
    name="router",
    start_hint="Start it with `pacs-router` (or pass --router).",
    client_hint="a client with the role admin",
    exit_code=2,
)
DEID = RemoteService(
    name="de-identification service",
    start_hint="Start it with `pacs up` (or pass --deid).",
    client_hint="a client with the role retrieve",
    exit_code=1,
)

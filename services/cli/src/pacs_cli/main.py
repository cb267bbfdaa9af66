"""``pacs up``, ``pacs down`` and ``pacs status``."""

from __future__ import annotations

import subprocess
import time

import typer
from pacs_common.local import REPO, ensure_local_pki, load_infra_env
from rich.console import Console
from rich.table import Table

from pacs_cli.audit_commands import audit_app
from pacs_cli.deid_commands import deid_app
from pacs_cli.dlq_commands import dlq_app
from pacs_cli.index_commands import index_app, reindex
from pacs_cli.lifecycle_commands import delete, hold_app, retention_app
from pacs_cli.route_commands import route_app
from pacs_cli.stack import Stack, StackConfig, grpc_serving, port_open

app = typer.Typer(help="Run a local cloudpacs stack.", no_args_is_help=True)
app.command()(reindex)
app.add_typer(index_app, name="index")
app.add_typer(audit_app, name="audit")
app.add_typer(deid_app, name="deid")
app.add_typer(dlq_app, name="dlq")
app.add_typer(route_app, name="route")
app.command()(delete)
app.add_typer(hold_app, name="hold")
app.add_typer(retention_app, name="retention")
console = Console()


def _default_stack() -> Stack:
    return Stack(
        StackConfig(
            run_dir=REPO / ".cache" / "run" / "services", transcoder_port=50054, deid_port=50055
        )
    )


def _run_infra(script: str, *args: str) -> None:
    result = subprocess.run([str(REPO / "infra" / script), *args], check=False)  # noqa: S603
    if result.returncode != 0:
        console.print(f"[red]infra/{script} failed[/red]: read its output above, fix, retry")
        raise typer.Exit(result.returncode)


@app.command()
def up(timeout: float = typer.Option(90.0, help="seconds to wait for each service")) -> None:
    """Start the infrastructure and every service; return when all are ready."""
    started = time.monotonic()
    _run_infra("up.sh")
    ensure_local_pki()  # the CA and each service's certificate, for mutual TLS
    stack = _default_stack()
    for process in stack.processes:
        with console.status(f"starting {process.spec.name}…"):
            try:
                process.start(stack.config.service_env())
                process.wait_ready(timeout)
            except RuntimeError as exc:
                console.print(f"[red]{exc}[/red]")
                console.print("Fix the problem above, then run `pacs up` again.")
                raise typer.Exit(1) from exc
        console.print(f"[green]✓[/green] {process.spec.name} ready")
    _print_status(stack)
    console.print(f"cloudpacs is up ({time.monotonic() - started:.1f}s). Stop it with `pacs down`.")


@app.command()
def down(purge: bool = typer.Option(False, help="also delete local data")) -> None:
    """Stop every service, then the infrastructure."""
    stopped = _default_stack().stop()
    console.print(f"stopped: {', '.join(stopped) or 'no service was running'}")
    _run_infra("down.sh", *(["--purge"] if purge else []))


@app.command()
def status() -> None:
    """Show what runs and where it listens."""
    _print_status(_default_stack())


def _print_status(stack: Stack) -> None:
    table = Table(title="cloudpacs")
    for column in ("component", "state", "endpoint"):
        table.add_column(column)
    infra = load_infra_env()
    kafka = infra.get("PACS_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    s3 = infra.get("PACS_S3_ENDPOINT", "http://127.0.0.1:17070")
    pg = infra.get(
        "PACS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:15432/cloudpacs"
    )
    for name, endpoint, port in (
        ("kafka", kafka, int(kafka.rsplit(":", 1)[1])),
        ("s3 (versitygw)", s3, int(s3.rsplit(":", 1)[1])),
        ("postgresql", pg, int(pg.split("@")[1].split("/")[0].rsplit(":", 1)[1])),
    ):
        table.add_row(name, _state(port_open(port)), endpoint)
    for process in stack.processes:
        spec = process.spec
        running = process.pid() is not None and grpc_serving(spec.grpc_port)
        endpoints = [f"gRPC 127.0.0.1:{spec.grpc_port}"] + [
            f"{kind.upper()} 127.0.0.1:{port}" for kind, port in spec.extra_ports.items()
        ]
        if spec.name == "gateway":
            endpoints.append("AE title CLOUDPACS")
        table.add_row(spec.name, _state(running), ", ".join(endpoints))
    console.print(table)


def _state(up: bool) -> str:
    return "[green]up[/green]" if up else "[red]down[/red]"

"""``pacs deid files SRC DST``: de-identify every DICOM file under SRC through the running
de-identification service and write the results under DST, with a progress bar and a summary.

Calls go over mutual TLS as identity ``cli`` with the CLI's bearer token (role ``retrieve``).
Results are written as ``DST/<study>/<series>/<instance>.dcm`` named by the *new* UIDs: the
source's folder and file names often carry names or record numbers, so none of them is reused.
The Basic Profile applies when no ``--option`` is given; pixel data is kept unless
``clean_pixel_data`` is asked.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import typer
from pacs.deid.v1 import deid_service_pb2 as pb
from pacs_common.clients.deid import DeidClient
from pacs_common.errors import PacsError, UnavailableError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from pacs_cli.remote import DEID

console = Console()
deid_app = typer.Typer(help="De-identify DICOM files (PS3.15 Annex E).", no_args_is_help=True)

LOCAL_PROJECT = "local"
"""The project ``pacs up`` configures: tenant ``default`` into tenant ``research``."""


@dataclass
class Summary:
    """What happened to a folder of files."""

    written: int = 0
    not_dicom: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    private_removed: int = 0
    masked: Counter[str] = field(default_factory=Counter)
    methods: set[str] = field(default_factory=set)
    patients: set[str] = field(default_factory=set)
    studies: set[str] = field(default_factory=set)

    def add(self, report: pb.DeidentificationReport) -> None:
        self.written += 1
        self.actions.update(dict(report.actions))
        self.private_removed += report.private_removed
        self.masked.update(m.reason for m in report.masked)
        self.methods.update(report.method_codes)
        self.patients.add(report.patient_pseudonym)
        self.studies.add(report.study_instance_uid)


def is_part10(path: Path) -> bool:
    """A file with the Part 10 preamble and ``DICM`` prefix (PS3.10 7.1)."""
    try:
        with path.open("rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def output_path(destination: Path, report: pb.DeidentificationReport, data: bytes) -> Path:
    """Where a result goes: named by its new UIDs only (by its digest when it has none)."""
    if not report.sop_instance_uid:
        return destination / "without-uids" / f"{hashlib.sha256(data).hexdigest()[:32]}.dcm"
    return (
        destination
        / report.study_instance_uid
        / report.series_instance_uid
        / f"{report.sop_instance_uid}.dcm"
    )


@dataclass(frozen=True)
class Job:
    """What to de-identify, where to, and how."""

    source: Path
    destination: Path
    project: str = LOCAL_PROJECT
    options: tuple[str, ...] = ()
    workers: int = 4


def _list_files(source: Path) -> list[Path]:
    return sorted(p for p in source.rglob("*") if p.is_file())


async def deidentify_folder(
    client: DeidClient, job: Job, progress: Progress | None = None
) -> Summary:
    """De-identify every Part 10 file under ``job.source`` into ``job.destination``."""
    source, destination, project = job.source, job.destination, job.project
    options, workers = list(job.options), job.workers
    files = await asyncio.to_thread(_list_files, source)
    summary = Summary()
    task = progress.add_task("de-identifying", total=len(files)) if progress else None
    semaphore = asyncio.Semaphore(workers)

    async def one(path: Path) -> None:
        async with semaphore:
            try:
                if not await asyncio.to_thread(is_part10, path):
                    summary.not_dicom += 1
                    return
                data = await asyncio.to_thread(path.read_bytes)
                report, result = await client.deidentify_instance(project, data, options)
                target = output_path(destination, report, result)
                await asyncio.to_thread(_write, target, result)
                summary.add(report)
            except PacsError as exc:
                if isinstance(exc, UnavailableError) or exc.code in (
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.NOT_FOUND,
                ):
                    raise  # the service, the token or the project is wrong: stop, say so
                summary.refused[f"{exc.code.name}: {exc.message[:80]}"] += 1
            finally:
                if progress is not None and task is not None:
                    progress.advance(task)

    await asyncio.gather(*(one(p) for p in files))
    return summary


def _write(target: Path, data: bytes) -> None:
    """Write ``data``; when another result already holds the name (two source files of one
    SOP Instance UID, such as one image in two transfer syntaxes), add the content's digest."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.read_bytes() != data:
        target = target.with_name(f"{target.stem}_{hashlib.sha256(data).hexdigest()[:8]}.dcm")
    target.write_bytes(data)


async def _run(job: Job, target: str) -> Summary:
    async with DEID.channel(target) as channel:
        client = DeidClient(channel, timeout=300)
        columns = [*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, BarColumn(bar_width=None), console=console) as progress:
            return await deidentify_folder(client, job, progress)


def _print(summary: Summary, destination: Path) -> None:
    table = Table(title=f"de-identified into {destination}")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("files written", str(summary.written))
    table.add_row("patients (pseudonyms)", str(len(summary.patients)))
    table.add_row("studies", str(len(summary.studies)))
    table.add_row("not DICOM, skipped", str(summary.not_dicom))
    table.add_row("refused", str(sum(summary.refused.values())))
    for code in ("X", "Z", "D", "U", "C", "K", "U*"):
        if summary.actions[code]:
            table.add_row(f"attributes {code}", str(summary.actions[code]))
    table.add_row("private attributes removed", str(summary.private_removed))
    for reason, count in sorted(summary.masked.items()):
        table.add_row(f"pixel regions masked ({reason})", str(count))
    table.add_row("methods (CID 7050)", ", ".join(sorted(summary.methods)) or "-")
    console.print(table)
    for reason, count in summary.refused.most_common():
        console.print(f"[yellow]refused {count} x[/yellow] {reason}")


SOURCE_ARGUMENT = typer.Argument(..., exists=True, file_okay=False, help="folder to read")
DESTINATION_ARGUMENT = typer.Argument(..., help="folder to write (created)")
OPTION_OPTION = typer.Option(
    [], "--option", "-o", help="PS3.15 E.3 option (e.g. retain_uids, clean_pixel_data)"
)
PROJECT_OPTION = typer.Option(LOCAL_PROJECT, help="de-identification project (key, tenants)")
DEID_OPTION = typer.Option("127.0.0.1:50055", help="host:port of the DeidService")
WORKERS_OPTION = typer.Option(4, min=1, max=32, help="files in flight at once")


@deid_app.command("files")
def files(  # noqa: PLR0917 - a command's parameters are its command line
    source: Path = SOURCE_ARGUMENT,
    destination: Path = DESTINATION_ARGUMENT,
    option: list[str] = OPTION_OPTION,
    project: str = PROJECT_OPTION,
    deid: str = DEID_OPTION,
    workers: int = WORKERS_OPTION,
) -> None:
    """De-identify every DICOM file under SOURCE into DESTINATION (Basic Profile by default)."""
    if destination.resolve().is_relative_to(source.resolve()):
        console.print("[red]DESTINATION must not be inside SOURCE[/red]")
        raise typer.Exit(2)
    try:
        job = Job(source, destination, project, tuple(option), workers)
        summary = asyncio.run(_run(job, deid))
    except PacsError as exc:
        raise DEID.failure(exc, deid) from exc
    _print(summary, destination)
    if summary.refused:
        raise typer.Exit(1)

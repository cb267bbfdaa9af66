"""``pacs delete``, ``pacs hold set|release|list`` and ``pacs retention run``: the indexer's
AdminService over mutual TLS as identity ``cli`` with the CLI's bearer token (role ``admin``;
see :mod:`pacs_cli.credentials`)."""

from __future__ import annotations

import asyncio

import typer
from pacs.admin.v1 import admin_service_pb2 as pb
from pacs_common.clients.admin import AdminClient
from pacs_common.errors import FailedPreconditionError, PacsError
from rich.console import Console
from rich.table import Table

from pacs_cli.index_commands import INDEXER_OPTION, TENANT_HELP
from pacs_cli.remote import INDEXER

console = Console()
hold_app = typer.Typer(
    help="Legal holds: a held patient's or study's images cannot be deleted.",
    no_args_is_help=True,
)
retention_app = typer.Typer(help="Retention rules: delete what is kept long enough.")

TENANT_OPTION = typer.Option("", help=f"tenant to act on{TENANT_HELP}")


def _report_failure(exc: PacsError, target: str) -> typer.Exit:
    if isinstance(exc, FailedPreconditionError):
        console.print(f"[red]refused: {exc.message}[/red]")
        return typer.Exit(1)
    return INDEXER.failure(exc, target)


# --- pacs delete ---------------------------------------------------------------------------


async def _delete(request: pb.DeleteRequest, target: str) -> pb.DeleteResponse:
    async with INDEXER.channel(target) as channel:
        return await AdminClient(channel).delete(request)


def delete(  # noqa: PLR0917  (typer maps each option to a parameter)
    study: str = typer.Option(..., "--study", help="Study Instance UID to delete (or within)"),
    series: str = typer.Option("", "--series", help="delete only this series of the study"),
    instance: str = typer.Option("", "--instance", help="delete only this SOP Instance UID"),
    reason: str = typer.Option("", help="why (kept in the audit trail)"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
    tenant: str = TENANT_OPTION,
    indexer: str = INDEXER_OPTION,
) -> None:
    """Delete a study, a series or an instance: every stored version, and its index rows.

    Refused while a legal hold covers the study or its patient. Deleting what is already
    gone succeeds and changes nothing. Audited (DICOM Study Deleted).
    """
    what = f"instance {instance}" if instance else f"series {series}" if series else "study"
    scope = f"{what} of study {study}" if instance or series else f"study {study}"
    if not yes and not typer.confirm(f"Delete {scope} and every stored version?"):
        console.print("Nothing deleted.")
        raise typer.Exit(1)
    request = pb.DeleteRequest(
        tenant=tenant,
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=instance,
        reason=reason,
    )
    try:
        result = asyncio.run(_delete(request, indexer))
    except PacsError as exc:
        raise _report_failure(exc, indexer) from exc
    if result.instances_deleted:
        console.print(
            f"deleted {scope}: {result.instances_deleted} instances, "
            f"{result.versions_deleted} stored versions"
        )
    else:
        console.print(f"nothing to delete: {scope} is not stored (already deleted?)")


# --- pacs hold -----------------------------------------------------------------------------


def _hold_of(patient: str, issuer: str, study: str, reason: str = "") -> pb.LegalHold:
    if bool(patient) == bool(study):
        console.print("[red]name exactly one of --patient or --study[/red]")
        raise typer.Exit(2)
    if study:
        return pb.LegalHold(level=pb.HOLD_LEVEL_STUDY, subject=study, reason=reason)
    return pb.LegalHold(
        level=pb.HOLD_LEVEL_PATIENT, subject=patient, issuer_of_patient_id=issuer, reason=reason
    )


PATIENT_OPTION = typer.Option("", "--patient", help="Patient ID: every study of the patient")
ISSUER_OPTION = typer.Option("", "--issuer", help="Issuer of Patient ID (default: any issuer)")
STUDY_OPTION = typer.Option("", "--study", help="Study Instance UID: this study only")


@hold_app.command("set")
def hold_set(  # noqa: PLR0917  (typer maps each option to a parameter)
    reason: str = typer.Option(..., "--reason", help="why (a case, a request); shown in lists"),
    patient: str = PATIENT_OPTION,
    issuer: str = ISSUER_OPTION,
    study: str = STUDY_OPTION,
    tenant: str = TENANT_OPTION,
    indexer: str = INDEXER_OPTION,
) -> None:
    """Set a legal hold on a patient or a study: no deletion (operator or retention) until
    it is released."""
    hold = _hold_of(patient, issuer, study, reason)

    async def run() -> pb.SetLegalHoldResponse:
        async with INDEXER.channel(indexer) as channel:
            return await AdminClient(channel).set_hold(hold, tenant)

    try:
        result = asyncio.run(run())
    except PacsError as exc:
        raise INDEXER.failure(exc, indexer) from exc
    verb = "set" if result.created else "already set; reason updated"
    console.print(f"legal hold {verb}: {_describe(result.hold)}")


@hold_app.command("release")
def hold_release(
    patient: str = PATIENT_OPTION,
    issuer: str = ISSUER_OPTION,
    study: str = STUDY_OPTION,
    tenant: str = TENANT_OPTION,
    indexer: str = INDEXER_OPTION,
) -> None:
    """Release a legal hold (the same --patient/--issuer or --study it was set with)."""
    hold = _hold_of(patient, issuer, study)

    async def run() -> bool:
        async with INDEXER.channel(indexer) as channel:
            return await AdminClient(channel).release_hold(hold, tenant)

    try:
        released = asyncio.run(run())
    except PacsError as exc:
        raise INDEXER.failure(exc, indexer) from exc
    if released:
        console.print(f"legal hold released: {_describe(hold)}")
    else:
        console.print(f"no such legal hold: {_describe(hold)} (see `pacs hold list`)")


@hold_app.command("list")
def hold_list(tenant: str = TENANT_OPTION, indexer: str = INDEXER_OPTION) -> None:
    """List the tenant's legal holds."""

    async def run() -> list[pb.LegalHold]:
        async with INDEXER.channel(indexer) as channel:
            return await AdminClient(channel).list_holds(tenant)

    try:
        holds = asyncio.run(run())
    except PacsError as exc:
        raise INDEXER.failure(exc, indexer) from exc
    if not holds:
        console.print("no legal holds")
        return
    table = Table(title="legal holds")
    for column in ("level", "patient ID / study UID", "issuer", "reason", "set", "by"):
        table.add_column(column, overflow="fold")
    for hold in holds:
        table.add_row(
            _level(hold),
            hold.subject,
            hold.issuer_of_patient_id,
            hold.reason,
            hold.set_time,
            hold.set_by,
        )
    console.print(table)


def _level(hold: pb.LegalHold) -> str:
    return "patient" if hold.level == pb.HOLD_LEVEL_PATIENT else "study"


def _describe(hold: pb.LegalHold) -> str:
    issuer = f" (issuer {hold.issuer_of_patient_id})" if hold.issuer_of_patient_id else ""
    reason = f": {hold.reason}" if hold.reason else ""
    return f"{_level(hold)} {hold.subject}{issuer}{reason}"


# --- pacs retention ------------------------------------------------------------------------


def _candidates_table(candidates: list[pb.RetentionCandidate]) -> Table:
    table = Table(title="studies due under the retention rule")
    for column in ("study", "study date", "rule", "instances", "action"):
        table.add_column(column, overflow="fold")  # UIDs are copied whole, never cut
    for item in candidates:
        action = "[yellow]skipped: legal hold[/yellow]" if item.held else "delete"
        table.add_row(
            item.study_instance_uid, item.study_date, item.rule, str(item.instances), action
        )
    return table


async def _retention(
    target: str, tenant: str, dry_run: bool, as_of: str
) -> tuple[pb.RetentionSummary, int]:
    candidates: list[pb.RetentionCandidate] = []
    summary = pb.RetentionSummary()
    reported = False
    errors = 0
    async with INDEXER.channel(target) as channel:
        stream = AdminClient(channel).run_retention(dry_run=dry_run, tenant=tenant, as_of=as_of)
        async for item in stream:
            kind = item.WhichOneof("item")
            if kind == "candidate":
                candidates.append(item.candidate)
                continue
            if not reported:  # every candidate is in: report before anything is deleted
                reported = True
                if candidates:
                    console.print(_candidates_table(candidates))
            if kind == "deleted":
                done = item.deleted
                if done.error:
                    errors += 1
                    console.print(f"[red]{done.study_instance_uid}: {done.error}[/red]")
                else:
                    console.print(
                        f"deleted {done.study_instance_uid} ({done.instances_deleted} instances)"
                    )
            elif kind == "summary":
                summary = item.summary
    return summary, errors


@retention_app.command("run")
def retention_run(
    dry_run: bool = typer.Option(False, "--dry-run", help="report what is due; delete nothing"),
    as_of: str = typer.Option("", "--as-of", help="evaluate as of YYYYMMDD (default: today)"),
    tenant: str = TENANT_OPTION,
    indexer: str = INDEXER_OPTION,
) -> None:
    """Report the studies the tenant's retention rule makes due (held ones skipped), then
    delete them unless --dry-run. The rule is the indexer's PACS_INDEXER_RETENTION."""
    try:
        summary, errors = asyncio.run(_retention(indexer, tenant, dry_run, as_of))
    except PacsError as exc:
        raise INDEXER.failure(exc, indexer) from exc
    console.print(f"rule: {summary.rule_description} (as of {summary.as_of})")
    unheld = summary.due - summary.held
    if dry_run:
        console.print(
            f"dry run: {summary.due} studies due, {summary.held} held; "
            f"{unheld} would be deleted. Nothing was deleted."
        )
    else:
        console.print(
            f"{summary.due} studies due, {summary.held} held (skipped), "
            f"{summary.deleted} deleted, {summary.failed} failed"
        )
    if errors or summary.failed:
        console.print("Failed studies are retried by the next run.")
        raise typer.Exit(1)

"""``pacs audit list`` and ``pacs audit verify``: who touched which patient's images, and
whether the trail is unaltered, from the audit service's AuditService over mutual TLS as
identity ``cli`` with the CLI's bearer token (role ``audit-read``; records of no tenant, such
as refused associations, also need ``admin``)."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import typer
from pacs.audit.v1 import audit_service_pb2 as pb
from pacs.events.v1 import audit_events_pb2 as audit_pb
from pacs_common.audit_events import EVENT_ID_CODES
from pacs_common.clients.audit import AuditClient
from pacs_common.errors import PacsError
from rich.console import Console
from rich.table import Table

from pacs_cli.remote import AUDIT

console = Console()
audit_app = typer.Typer(help="Read and verify the audit trail.", no_args_is_help=True)

AUDIT_OPTION = typer.Option("127.0.0.1:50056", help="host:port of the audit service")
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def since_time(value: str, now: datetime | None = None) -> str:
    """``10m``/``2h``/``7d`` ago, or an RFC 3339 time as given; '' for ''.

    Raises:
        typer.BadParameter: neither a duration nor a time.
    """
    if not value:
        return ""
    if match := _DURATION.match(value.strip()):
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        moment = (now or datetime.now(UTC)) - delta
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter("use a duration (10m, 2h, 7d) or an RFC 3339 time") from exc
    return value


def _event_type(value: str) -> int:
    """An event type by its code (110112) or name (query, security-alert)."""
    if not value:
        return 0
    wanted = value.strip().lower().replace("_", "-")
    for number, (code, meaning) in EVENT_ID_CODES.items():
        if wanted in {code, meaning.lower().replace(" ", "-")}:
            return number
    raise typer.BadParameter(f"unknown event type {value!r}")


def _actor(event: audit_pb.AuditEvent) -> str:
    """The actor who asked (the requestor), else the first one."""
    for actor in event.actors:
        if actor.requestor:
            return actor.user_id
    return event.actors[0].user_id if event.actors else ""


def record_json(record: pb.AuditRecord) -> dict[str, Any]:
    """One record as the JSON object ``pacs audit list --json`` prints."""
    event = record.event
    code, meaning = EVENT_ID_CODES.get(event.event_type, ("", ""))
    return {
        "time": event.event_time,
        "event_id": code,
        "event": meaning,
        "event_type_code": event.event_type_code,
        "action": event.action,
        "outcome": int(event.outcome),
        "outcome_description": event.outcome_description,
        "actor": _actor(event),
        "actors": [
            {
                "user_id": a.user_id,
                "ae_title": a.ae_title,
                "address": a.network_address,
                "token_subject": a.token_subject,
                "requestor": a.requestor,
            }
            for a in event.actors
        ],
        "tenant": event.tenant,
        "patient_id": event.patient_id,
        "study_instance_uids": list(event.study_instance_uids),
        "source": event.source,
        "sequence": record.sequence,
    }


async def _query(target: str, request: pb.QueryRequest) -> list[pb.AuditRecord]:
    async with AUDIT.channel(target) as channel:
        return await AuditClient(channel, timeout=120).query(request)


async def _verify(target: str) -> pb.VerifyResponse:
    async with AUDIT.channel(target) as channel:
        return await AuditClient(channel, timeout=3600).verify()


@audit_app.command("list")
def list_records(  # noqa: PLR0917  (typer maps each option to a parameter)
    since: str = typer.Option("", help="records of the last 10m / 2h / 7d, or since a time"),
    until: str = typer.Option("", help="records before this RFC 3339 time"),
    patient: str = typer.Option("", help="records about this Patient ID"),
    study: str = typer.Option("", help="records about this Study Instance UID"),
    actor: str = typer.Option("", help="records of this user, AE title or address"),
    event_type: str = typer.Option("", "--type", help="query, security-alert, 110104, ..."),
    tenant: str = typer.Option("", help="tenant; default: the CLI credentials' tenant"),
    limit: int = typer.Option(0, min=0, help="at most this many (0: the service's maximum)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
    audit: str = AUDIT_OPTION,
) -> None:
    """Who did what to which patient's images, oldest first."""
    request = pb.QueryRequest(
        tenant=tenant,
        patient_id=patient,
        study_instance_uid=study,
        actor=actor,
        event_type=_event_type(event_type),  # type: ignore[arg-type]
        since=since_time(since),
        until=until,
        limit=limit,
    )
    try:
        records = asyncio.run(_query(audit, request))
    except PacsError as exc:
        raise AUDIT.failure(exc, audit) from exc
    if as_json:
        for record in records:
            typer.echo(json.dumps(record_json(record), separators=(",", ":")))
        return
    if limit and len(records) == limit:
        console.print(f"[yellow]the first {limit} records: narrow the filters for more[/yellow]")
    table = Table("time", "event", "action", "outcome", "actor", "patient", "studies")
    for record in records:
        row = record_json(record)
        table.add_row(
            row["time"],
            f"{row['event']} ({row['event_id']})",
            row["action"],
            str(row["outcome"]),
            row["actor"],
            row["patient_id"],
            "\n".join(row["study_instance_uids"]),
        )
    console.print(table)


@audit_app.command("verify")
def verify(audit: str = AUDIT_OPTION) -> None:
    """Check that no record was changed, removed or reordered (exit 1 naming the first)."""
    try:
        verdict = asyncio.run(_verify(audit))
    except PacsError as exc:
        raise AUDIT.failure(exc, audit) from exc
    if verdict.intact:
        console.print(
            f"intact: {verdict.records_checked} records, "
            f"{verdict.checkpoints_checked} signed checkpoints"
        )
        return
    console.print(
        f"[red]NOT intact: record {verdict.first_bad_sequence}: {verdict.problem}[/red] "
        f"({verdict.records_checked} records checked before it)"
    )
    raise typer.Exit(1)

"""``pacs dlq list|show|replay|drop``: the events a consumer group gave up on, why, and what
to do with them once the cause is fixed.

The CLI reads the dead-letter topics and writes the replayed events, handled markers and audit
events on Kafka directly, with the services' ``PACS_KAFKA_*`` settings and credentials
(:mod:`pacs_cli.dead_letters` explains the markers). Nothing here prints patient data unless
``show --show-phi`` asks for it: the failure reasons were redacted of UIDs by the consumer (and
are again here), and decoded events are masked by :mod:`pacs_cli.event_json`.

Exit codes: 0 done; 1 refused (already handled: pass ``--force``); 2 bad input, an unknown
dead letter, or Kafka unreachable.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import typer
from google.protobuf.message import Message
from pacs_common import audit_events
from pacs_common.errors import NotFoundError, PacsError, UnavailableError
from pacs_common.events import cloudevent_headers, now_rfc3339
from pacs_common.logging import redact_uids
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pacs_cli.dead_letters import (
    DLQ_HEADERS,
    DeadLetter,
    DeadLetterId,
    DeadLetterStore,
    Handled,
    open_store,
)
from pacs_cli.event_json import MASK, decode, to_json

console = Console()
dlq_app = typer.Typer(
    help="Dead letters: events a consumer gave up on. List, inspect, replay, drop.",
    no_args_is_help=True,
)
T = TypeVar("T")

GROUP_OPTION = typer.Option("", "--group", help="only this consumer group's dead letters")


class RefusedError(Exception):
    """The dead letter was already handled and ``--force`` was not given."""


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run one command's work, turning errors into a message and an exit code."""
    try:
        return asyncio.run(work)
    except RefusedError as exc:
        console.print(f"[yellow]{exc}[/yellow]")
        raise typer.Exit(1) from exc
    except PacsError as exc:
        console.print(f"[red]{exc.message}[/red]")
        if isinstance(exc, UnavailableError):
            console.print(
                "Check PACS_KAFKA_BOOTSTRAP and the credentials (PACS_KAFKA_SASL_*): the CLI "
                "uses the services' Kafka settings; locally `make up` writes them."
            )
        elif isinstance(exc, NotFoundError):
            console.print("`pacs dlq list --all` shows the dead letters there are.")
        raise typer.Exit(2) from exc


def _operator() -> str:
    """Who runs the command: the local user at this host (the audit record's requestor)."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _timestamp(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def summary(letter: DeadLetter) -> dict[str, Any]:
    """One dead letter as ``list --json`` prints it: no patient data."""
    headers = letter.headers
    row: dict[str, Any] = {
        "id": str(letter.id),
        "group": letter.id.group,
        "topic": headers.get("dlq_topic", ""),
        "partition": int(headers.get("dlq_partition", "-1") or -1),
        "offset": int(headers.get("dlq_offset", "-1") or -1),
        "event_type": headers.get("ce_type", ""),
        "event_time": headers.get("ce_time", ""),
        "dead_lettered_time": _timestamp(letter.record.timestamp),
        "reason": redact_uids(headers.get("dlq_error", "")),
        "handled": None,
    }
    if letter.handled is not None:
        row["handled"] = {**letter.handled.__dict__, "reason": redact_uids(letter.handled.reason)}
    return row


def detail(letter: DeadLetter, show_phi: bool) -> dict[str, Any]:
    """One dead letter as ``show`` prints it: the summary, the other headers, the decoded event."""
    row = summary(letter)
    key = letter.record.key
    row["key"] = (key or b"").decode(errors="replace") if show_phi else MASK
    row["headers"] = {k: v for k, v in letter.headers.items() if k not in DLQ_HEADERS}
    message = decode(letter.headers.get("ce_type"), letter.record.value)
    row["event"] = to_json(message, show_phi) if message is not None else None
    if message is None:
        row["event_note"] = (
            f"not decodable as {row['event_type'] or 'an unknown type'} "
            f"({len(letter.record.value or b'')} bytes)"
        )
    return row


async def _groups(store: DeadLetterStore, group: str) -> list[str]:
    return [group] if group else await store.dead_letter_groups()


async def _list(group: str, include_handled: bool) -> list[dict[str, Any]]:
    async with open_store() as store:
        letters = await store.dead_letters(await _groups(store, group))
    return [summary(x) for x in letters if include_handled or x.handled is None]


@dlq_app.command("list")
def list_dead_letters(
    group: str = GROUP_OPTION,
    include_handled: bool = typer.Option(
        False, "--all", help="also those already replayed or dropped, with the outcome"
    ),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
) -> None:
    """Dead letters not yet replayed or dropped (with --all: every one), and why each failed."""
    rows = _run(_list(group, include_handled))
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, separators=(",", ":")))
        return
    # Text cells are escaped: a reason such as "study [redacted]" is not rich markup.
    table = Table()
    for name in ("id", "from topic:partition:offset", "event", "dead-lettered", "reason"):
        table.add_column(name, overflow="fold")  # IDs are copied from here: never cut short
    if include_handled:
        table.add_column("handled", overflow="fold")
    for row in rows:
        cells = [
            row["id"],
            f"{row['topic']}:{row['partition']}:{row['offset']}",
            str(row["event_type"]).removeprefix("pacs.events.v1."),
            row["dead_lettered_time"],
            row["reason"][:300],
        ]
        if include_handled:
            handled = row["handled"]
            cells.append(
                f"{handled['outcome']} {handled['time']} by {handled['operator']}"
                + (f": {handled['reason']}" if handled["reason"] else "")
                if handled
                else ""
            )
        table.add_row(*(escape(cell) for cell in cells))
    console.print(table)
    console.print(f"{len(rows)} dead letter(s)" + ("" if include_handled else " to handle"))


async def _show(dead_letter_id: str, show_phi: bool) -> dict[str, Any]:
    wanted = DeadLetterId.parse(dead_letter_id)
    async with open_store() as store:
        letter = await store.dead_letter(wanted)
        if show_phi:  # patient data read by an operator: audited before it is printed
            await _audit(store, letter, "shown with patient data", "--show-phi", _operator())
        return detail(letter, show_phi)


@dlq_app.command("show")
def show(
    dead_letter_id: str = typer.Argument(..., metavar="ID", help="group:partition:offset"),
    show_phi: bool = typer.Option(
        False, "--show-phi", help="print patient data (the key, names, UIDs, the DICOM header)"
    ),
) -> None:
    """One dead letter with its decoded event (patient data masked unless --show-phi, which
    is audited)."""
    typer.echo(json.dumps(_run(_show(dead_letter_id, show_phi)), indent=2))


def _participants(message: Message | None) -> tuple[str, list[str]]:
    """The tenant and the studies an event is about, for its audit record."""
    tenant, studies = "", []
    pending = [message] if message is not None else []
    while pending:
        current = pending.pop()
        for field, value in current.ListFields():
            if field.name == "tenant" and not tenant:
                tenant = value
            elif field.name == "study_instance_uid" and value not in studies:
                studies.append(value)
            elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
                pending += list(value) if field.is_repeated else [value]
    return tenant, studies


async def _audit(
    store: DeadLetterStore, letter: DeadLetter, outcome: str, reason: str, operator: str
) -> None:
    """Publish the audit record of a replay or drop and wait for the brokers: synchronously,
    not through the queued :class:`pacs_common.audit_emitter.AuditEmitter` that services use
    so as never to block a user — here an operator's command that could not be audited fails
    (and can be run again) rather than passing unrecorded."""
    settings = audit_events.AuditSettings()
    if not settings.enabled:
        return
    tenant, studies = _participants(decode(letter.headers.get("ce_type"), letter.record.value))
    event = audit_events.dead_letter_handled(
        operator, str(letter.id), outcome, reason, tenant=tenant, study_instance_uids=studies
    )
    event.id, event.event_time, event.source = str(uuid.uuid4()), now_rfc3339(), "pacs-cli"
    await store.send(
        settings.topic,
        event.SerializeToString(),
        tenant.encode(),
        cloudevent_headers(event, "pacs-cli"),
    )


def _refuse_if_handled(letter: DeadLetter, force: bool) -> None:
    handled = letter.handled
    if handled is not None and not force:
        where = f" to {handled.replayed_to}" if handled.replayed_to else ""
        raise RefusedError(
            f"dead letter {letter.id} was already {handled.outcome}{where} at {handled.time} by "
            f"{handled.operator}. Consumers are idempotent, so doing it again is harmless: "
            "pass --force to do it anyway."
        )


async def _replay_one(
    store: DeadLetterStore, letter: DeadLetter, reason: str, force: bool, operator: str
) -> str:
    _refuse_if_handled(letter, force)
    topic = letter.headers.get("dlq_topic", "")
    if not topic:
        raise NotFoundError(f"{letter.id} has no dlq_topic header: not a dead letter")
    record = letter.record
    where = await store.send(topic, record.value, record.key, letter.replay_headers(letter.id))
    await _audit(store, letter, "replayed", reason, operator)
    await store.mark(
        letter.id, Handled("replayed", reason, operator, now_rfc3339(), replayed_to=where)
    )
    return where


async def _replay(
    dead_letter_id: str, every: bool, group: str, reason: str, force: bool
) -> list[tuple[str, str]]:
    operator = _operator()
    async with open_store() as store:
        if every:
            found = await store.dead_letters(await _groups(store, group))
            letters = [x for x in found if x.handled is None]
        else:
            letters = [await store.dead_letter(DeadLetterId.parse(dead_letter_id))]
        done = []
        for letter in letters:
            where = await _replay_one(store, letter, reason, force, operator)
            done.append((str(letter.id), where))
            console.print(f"replayed {letter.id} to {where}")
        return done


@dlq_app.command("replay")
def replay(
    dead_letter_id: str = typer.Argument("", metavar="[ID]", help="group:partition:offset"),
    every: bool = typer.Option(False, "--all", help="every dead letter not yet handled"),
    group: str = typer.Option("", "--group", help="with --all: only this group's"),
    reason: str = typer.Option("", "--reason", help="why (kept with the marker and audited)"),
    force: bool = typer.Option(False, "--force", help="replay even if already handled"),
) -> None:
    """Put dead letters back on their original topic (acks=all), then mark them replayed.

    Every group consuming that topic sees the event again; consumers are idempotent."""
    if every == bool(dead_letter_id) or (group and not every):
        console.print("[red]give either one ID or --all (optionally with --group)[/red]")
        raise typer.Exit(2)
    done = _run(_replay(dead_letter_id, every, group, reason, force))
    console.print(f"{len(done)} dead letter(s) replayed")


async def _drop(dead_letter_id: str, reason: str, force: bool) -> None:
    wanted = DeadLetterId.parse(dead_letter_id)
    operator = _operator()
    async with open_store() as store:
        letter = await store.dead_letter(wanted)
        _refuse_if_handled(letter, force)
        await _audit(store, letter, "dropped", reason, operator)
        await store.mark(wanted, Handled("dropped", reason, operator, now_rfc3339()))


@dlq_app.command("drop")
def drop(
    dead_letter_id: str = typer.Argument(..., metavar="ID", help="group:partition:offset"),
    reason: str = typer.Option(..., "--reason", help="why it is not replayed (audited)"),
    force: bool = typer.Option(False, "--force", help="even if already handled"),
) -> None:
    """Mark a dead letter handled without replaying it: `list` no longer shows it."""
    if not reason.strip():
        console.print("[red]--reason must say why the event is dropped[/red]")
        raise typer.Exit(2)
    _run(_drop(dead_letter_id, reason, force))
    console.print(f"dropped {dead_letter_id}")

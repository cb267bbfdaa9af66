"""Retention: which studies a tenant's rules say are due for deletion, chosen by one query.

A rule (:class:`RetentionRule`, configured per tenant in ``PACS_INDEXER_RETENTION``) keeps a
study ``years`` after its Study Date, and ``pediatric_years`` when the patient was a child at
the time of the study (age at StudyDate, from PatientBirthDate, under ``pediatric_age``). A
study whose patient's birth date is unknown or malformed is kept for the longer of the two
periods: retention must never delete early. A study without a valid Study Date (DA,
``YYYYMMDD``, PS3.5 6.2) is never due. A study under a legal hold (on it, or on its patient) is
reported as held and skipped.

The selection is SQL in the index (:func:`due_studies`), backed by the ``(tenant,
study_date)`` index: it reads only studies older than the shortest period, never the whole
tenant. Age at the study is computed the way a person computes it: ``(StudyDate -
PatientBirthDate) // 10000`` on the dates as integers ``YYYYMMDD`` is the number of whole years
between them (the month and day digits only borrow when the birthday has not come yet).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime

from pacs.admin.v1 import admin_service_pb2 as pb
from pacs_common import audit_events
from pacs_common.clients.storage import StorageClient
from pacs_common.errors import InvalidArgumentError, PacsError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    ColumnElement,
    Integer,
    SQLColumnExpression,
    and_,
    case,
    cast,
    exists,
    literal,
    or_,
    select,
)

from pacs_indexer import lifecycle
from pacs_indexer.database import Database
from pacs_indexer.schema import LegalHold, Patient, Study

ANY_TENANT = "*"
_DA = "^[0-9]{8}$"
_DA_GLOB = "[0-9]" * 8


class RetentionRule(BaseModel):
    """How long a tenant keeps its studies (``PACS_INDEXER_RETENTION``, JSON per tenant)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    years: int = Field(ge=1, le=200, description="years a study is kept after its Study Date")
    pediatric_years: int | None = Field(
        None, ge=1, le=200, description="years for a patient under pediatric_age at the study"
    )
    pediatric_age: int = Field(18, ge=1, le=30, description="age below which a patient is a child")

    def describe(self) -> str:
        """The rule in words, for the report."""
        text = f"{self.years} years after the study date"
        if self.pediatric_years is not None:
            text += f"; {self.pediatric_years} years if under {self.pediatric_age} at the study"
        return text


def rule_for(rules: dict[str, RetentionRule], tenant: str) -> RetentionRule | None:
    """The tenant's rule, else the rule for every tenant (``"*"``), else none."""
    return rules.get(tenant) or rules.get(ANY_TENANT)


def years_before(day: date, years: int) -> str:
    """``day`` minus ``years`` as YYYYMMDD (29 February becomes 28 February)."""
    try:
        earlier = day.replace(year=day.year - years)
    except ValueError:
        earlier = day.replace(year=day.year - years, day=28)
    return earlier.strftime("%Y%m%d")


def parse_as_of(value: str) -> date:
    """The evaluation date: YYYYMMDD, or today (UTC) when empty."""
    if not value:
        return datetime.now(UTC).date()
    try:
        return datetime.strptime(value, "%Y%m%d").date()
    except ValueError as exc:
        raise InvalidArgumentError("as_of must be a date YYYYMMDD") from exc


@dataclass(frozen=True)
class Due:
    """One study the rule makes due."""

    study_instance_uid: str
    study_date: str
    rule: str  # "adult", "pediatric" or "unknown-age"
    held: bool
    instances: int


@dataclass(frozen=True)
class _Selection:
    category: ColumnElement[str]
    held: ColumnElement[bool]
    where: list[ColumnElement[bool]]


def _is_date(column: SQLColumnExpression[str], dialect: str) -> ColumnElement[bool]:
    """``column`` holds eight digits (DA, PS3.5 6.2): GLOB on SQLite (native, where
    SQLAlchemy's REGEXP would call back into Python for every row), a regular expression on
    PostgreSQL."""
    if dialect == "sqlite":
        return column.op("GLOB")(literal(_DA_GLOB))
    return column.regexp_match(_DA)


def _selection(tenant: str, rule: RetentionRule, as_of: date, dialect: str) -> _Selection:
    adult_cutoff = years_before(as_of, rule.years)
    child_cutoff = years_before(as_of, rule.pediatric_years or rule.years)
    # Unknown age: the longer period, i.e. the earlier cutoff.
    unknown_cutoff = min(adult_cutoff, child_cutoff)
    dated = _is_date(Study.study_date, dialect)
    born = _is_date(Patient.patient_birth_date, dialect)
    # CASE guards the casts: only well-formed dates are converted, on both backends.
    age_digits = case(
        (
            and_(dated, born),
            cast(Study.study_date, Integer) - cast(Patient.patient_birth_date, Integer),
        ),
        else_=None,
    )
    category = case(
        (age_digits.is_(None), literal("unknown-age")),
        (age_digits < rule.pediatric_age * 10000, literal("pediatric")),
        else_=literal("adult"),
    )
    due = or_(
        and_(category == "adult", Study.study_date <= adult_cutoff),
        and_(category == "pediatric", Study.study_date <= child_cutoff),
        and_(category == "unknown-age", Study.study_date <= unknown_cutoff),
    )
    held = exists().where(
        LegalHold.tenant == Study.tenant,
        or_(
            and_(LegalHold.level == lifecycle.STUDY, LegalHold.subject == Study.study_instance_uid),
            and_(
                LegalHold.level == lifecycle.PATIENT,
                Patient.patient_id != "",
                LegalHold.subject == Patient.patient_id,
                or_(LegalHold.issuer == "", LegalHold.issuer == Patient.issuer_of_patient_id),
            ),
        ),
    )
    # The range the (tenant, study_date) index serves; the rest is checked on what it finds.
    latest = max(adult_cutoff, child_cutoff)
    where = [Study.tenant == tenant, Study.study_date <= latest, dated, due]
    return _Selection(category, held, where)


def due_studies(database: Database, tenant: str, rule: RetentionRule, as_of: date) -> list[Due]:
    """The studies of ``tenant`` due under ``rule`` on ``as_of``, held ones included (marked),
    oldest first."""
    selection = _selection(tenant, rule, as_of, database.dialect)
    query = (
        select(
            Study.study_instance_uid,
            Study.study_date,
            selection.category,
            selection.held,
            Study.number_of_instances,
        )
        .join(Patient, Study.patient_pk == Patient.id)
        .where(*selection.where)
        .order_by(Study.study_date, Study.study_instance_uid)
    )
    with database.session() as session:
        return [
            Due(uid, day, str(kind), bool(on_hold), count)
            for uid, day, kind, on_hold, count in session.execute(query)
        ]


async def run(
    database: Database,
    storage: StorageClient | None,
    tenant: str,
    rule: RetentionRule | None,
    *,
    dry_run: bool,
    as_of: date,
    caller: audit_events.TokenCaller,
    write_lock: threading.Lock | None = None,
) -> AsyncIterator[pb.RunRetentionResponse]:
    """Report every due study, then (unless ``dry_run``) delete the unheld ones through
    :func:`pacs_indexer.lifecycle.delete`; end with a summary."""
    summary = pb.RetentionSummary(as_of=as_of.strftime("%Y%m%d"))
    if rule is None:
        summary.rule_description = "no retention rule for this tenant: nothing is due"
        yield pb.RunRetentionResponse(summary=summary)
        return
    summary.rule_description = rule.describe()
    found = await asyncio.to_thread(due_studies, database, tenant, rule, as_of)
    for item in found:
        summary.due += 1
        summary.held += item.held
        yield pb.RunRetentionResponse(
            candidate=pb.RetentionCandidate(
                study_instance_uid=item.study_instance_uid,
                study_date=item.study_date,
                rule=item.rule,
                held=item.held,
                instances=item.instances,
            )
        )
    if not dry_run:
        if storage is None:
            raise InvalidArgumentError("this indexer has no storage connection")
        for item in found:
            if item.held:
                continue
            outcome = pb.RetentionDeleted(study_instance_uid=item.study_instance_uid)
            target = lifecycle.Target(tenant, item.study_instance_uid)
            try:
                removed = await lifecycle.delete(
                    database,
                    storage,
                    target,
                    caller=caller,
                    reason=f"retention ({item.rule}): {rule.describe()}",
                    write_lock=write_lock,
                )
            except PacsError as exc:
                outcome.error = f"{exc.code.name}: {exc.message}"
                summary.failed += 1
            else:
                outcome.instances_deleted = removed.instances
                summary.deleted += 1
            yield pb.RunRetentionResponse(deleted=outcome)
    yield pb.RunRetentionResponse(summary=summary)

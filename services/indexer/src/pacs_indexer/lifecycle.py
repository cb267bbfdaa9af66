"""Deleting a study, series or instance, and the legal holds that forbid it.

A deletion goes through storage, which owns the bytes and the announcement: for each instance
storage's ``Delete`` removes **every stored version** (``all_versions``) behind an intent record
and publishes ``InstanceDeleted`` before it answers, so every consumer (this indexer's own,
the audit service) learns of it the way it learns of any deletion. The rows are then also
removed here, at once, so that a query made after :func:`delete` returned no longer finds them
(the consumer's later handling of the same event is idempotent), with a tombstone so that an
older ``InstanceStored`` delivered late cannot bring an instance back.

Which instances: those the index holds under the study (series, instance) **and** those
storage lists under the same prefix, so that an instance stored but not yet indexed (or whose
indexing failed) is not left behind. Deleting again finds nothing and changes nothing.

A legal hold on the study, or on its patient (Patient ID, and Issuer of Patient ID when the
hold names one), refuses the deletion with FAILED_PRECONDITION before anything is removed.

:func:`delete` is a plain async function so that other parts of the indexer (retention,
rejection notes) delete the same way.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from pacs.type.v1 import instance_pb2
from pacs_common import audit_events
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import is_valid_uid
from pacs_common.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    PacsError,
    UnavailableError,
)
from pacs_common.tenants import check_tenant
from sqlalchemy import Select, and_, or_, select, text
from sqlalchemy import delete as sql_delete
from sqlalchemy.orm import Session

from pacs_indexer.database import Database
from pacs_indexer.indexing import delete_instance
from pacs_indexer.records import now_rfc3339
from pacs_indexer.schema import Instance, LegalHold, Patient, Series, Study

log = logging.getLogger(__name__)

PATIENT, STUDY = "PATIENT", "STUDY"
_CONCURRENT_DELETES = 8
"""Storage Delete calls in flight for one deletion (each is a few S3 requests)."""
_WRITE_LOCK = 0x7061_6373_6465_6C  # "pacsdel": the advisory lock of index writes vs deletions
_ROW_ATTEMPTS = 5
"""Tries of one instance's row removal that a concurrent transaction aborted."""


@dataclass(frozen=True)
class Target:
    """What to delete: a study, one series of it, or one instance."""

    tenant: str
    study_instance_uid: str
    series_instance_uid: str = ""
    sop_instance_uid: str = ""

    def check(self) -> None:
        """Raise InvalidArgumentError unless the target is well formed (PS3.5 9.1 UIDs)."""
        check_tenant(self.tenant)
        if not self.study_instance_uid:
            raise InvalidArgumentError("study_instance_uid is required")
        for name, value in (
            ("study_instance_uid", self.study_instance_uid),
            ("series_instance_uid", self.series_instance_uid),
            ("sop_instance_uid", self.sop_instance_uid),
        ):
            if value and not is_valid_uid(value):
                raise InvalidArgumentError(f"{name} is not a valid UID (PS3.5 9.1)")

    @property
    def level(self) -> str:
        """STUDY, SERIES or IMAGE: what the target names (for messages and the audit)."""
        if self.sop_instance_uid:
            return "IMAGE"
        return "SERIES" if self.series_instance_uid else "STUDY"


@dataclass
class DeleteOutcome:
    """What one deletion removed."""

    instances: int = 0
    versions: int = 0
    sop_classes: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Hold:
    """A legal hold as stored (see :class:`pacs_indexer.schema.LegalHold`)."""

    level: str
    subject: str
    issuer: str = ""
    reason: str = ""
    set_time: str = ""
    set_by: str = ""


@dataclass
class _Resolved:
    patient_id: str = ""
    issuer: str = ""
    # (series UID, SOP instance UID) -> SOP class UID, as the index knows them.
    instances: dict[tuple[str, str], str] = field(default_factory=dict)


# --- legal holds ---------------------------------------------------------------------------


def check_hold(hold: Hold) -> None:
    """Raise InvalidArgumentError unless ``hold`` names a patient or a study."""
    if hold.level not in (PATIENT, STUDY):
        raise InvalidArgumentError("a legal hold covers a PATIENT or a STUDY")
    if not hold.subject.strip():
        raise InvalidArgumentError("a legal hold needs its Patient ID or Study Instance UID")
    if hold.level == STUDY and not is_valid_uid(hold.subject):
        raise InvalidArgumentError("study_instance_uid is not a valid UID (PS3.5 9.1)")
    if hold.level == STUDY and hold.issuer:
        raise InvalidArgumentError("issuer_of_patient_id applies to a PATIENT hold only")


def set_hold(database: Database, tenant: str, hold: Hold) -> tuple[Hold, bool]:
    """Set ``hold`` (or update its reason); returns it as stored and whether it is new."""
    check_tenant(tenant)
    check_hold(hold)
    with database.session() as session:
        row = session.scalars(_hold_query(tenant, hold)).one_or_none()
        created = row is None
        if row is None:
            row = LegalHold(
                tenant=tenant,
                level=hold.level,
                subject=hold.subject.strip(),
                issuer=hold.issuer.strip(),
                set_time=now_rfc3339(),
                set_by=hold.set_by,
            )
            session.add(row)
        row.reason = hold.reason
        session.flush()
        return _hold_of(row), created


def release_hold(database: Database, tenant: str, hold: Hold) -> bool:
    """Lift ``hold``; False when it was not set."""
    check_tenant(tenant)
    check_hold(hold)
    with database.session() as session:
        result = session.execute(
            sql_delete(LegalHold).where(
                LegalHold.tenant == tenant,
                LegalHold.level == hold.level,
                LegalHold.subject == hold.subject.strip(),
                LegalHold.issuer == hold.issuer.strip(),
            )
        )
        return bool(getattr(result, "rowcount", 0))


def list_holds(database: Database, tenant: str) -> list[Hold]:
    """The tenant's holds, oldest first."""
    check_tenant(tenant)
    with database.session() as session:
        rows = session.scalars(
            select(LegalHold).where(LegalHold.tenant == tenant).order_by(LegalHold.id)
        )
        return [_hold_of(row) for row in rows]


def holds_covering(
    session: Session, tenant: str, study_uid: str, patient_id: str, issuer: str | None
) -> list[Hold]:
    """The holds that cover a study of a patient (a PATIENT hold without issuer matches any;
    ``issuer`` None: the issuer is unknown, so a PATIENT hold of any issuer covers it)."""
    covers = and_(LegalHold.level == STUDY, LegalHold.subject == study_uid)
    if patient_id:
        same_patient = and_(LegalHold.level == PATIENT, LegalHold.subject == patient_id)
        if issuer is not None:
            same_patient = and_(
                same_patient, or_(LegalHold.issuer == "", LegalHold.issuer == issuer)
            )
        covers = or_(covers, same_patient)
    rows = session.scalars(select(LegalHold).where(LegalHold.tenant == tenant, covers))
    return [_hold_of(row) for row in rows]


def _hold_query(tenant: str, hold: Hold) -> Select[LegalHold]:
    return select(LegalHold).where(
        LegalHold.tenant == tenant,
        LegalHold.level == hold.level,
        LegalHold.subject == hold.subject.strip(),
        LegalHold.issuer == hold.issuer.strip(),
    )


def _hold_of(row: LegalHold) -> Hold:
    return Hold(row.level, row.subject, row.issuer, row.reason, row.set_time, row.set_by)


# --- deletion ------------------------------------------------------------------------------


def _resolve(database: Database, target: Target) -> tuple[_Resolved, list[Hold]]:
    """The study's patient and the indexed instances the target names, and the holds that
    cover the study (one transaction)."""
    resolved = _Resolved()
    with database.session() as session:
        patient = session.execute(
            select(Patient.patient_id, Patient.issuer_of_patient_id)
            .join(Study, Study.patient_pk == Patient.id)
            .where(Study.tenant == target.tenant)
            .where(Study.study_instance_uid == target.study_instance_uid)
        ).one_or_none()
        if patient is not None:
            resolved.patient_id, resolved.issuer = patient
        query = (
            select(Series.series_instance_uid, Instance.sop_instance_uid, Instance.sop_class_uid)
            .join(Series, Instance.series_pk == Series.id)
            .join(Study, Series.study_pk == Study.id)
            .where(Study.tenant == target.tenant)
            .where(Study.study_instance_uid == target.study_instance_uid)
        )
        if target.series_instance_uid:
            query = query.where(Series.series_instance_uid == target.series_instance_uid)
        if target.sop_instance_uid:
            query = query.where(Instance.sop_instance_uid == target.sop_instance_uid)
        for series_uid, sop_uid, sop_class in session.execute(query):
            resolved.instances[(series_uid, sop_uid)] = sop_class
        holds = holds_covering(
            session, target.tenant, target.study_instance_uid, resolved.patient_id, resolved.issuer
        )
    return resolved, holds


async def _stored(storage: StorageClient, target: Target) -> dict[tuple[str, str], str]:
    """What storage holds under the target's prefix (instances not indexed included)."""
    found: dict[tuple[str, str], str] = {}
    if target.sop_instance_uid and target.series_instance_uid:
        # One instance: its Delete is idempotent, no listing needed.
        found[(target.series_instance_uid, target.sop_instance_uid)] = ""
        return found
    async for info in storage.list_all(
        target.tenant, target.study_instance_uid, target.series_instance_uid
    ):
        ref = info.instance
        if target.sop_instance_uid and ref.sop_instance_uid != target.sop_instance_uid:
            continue
        found[(ref.series_instance_uid, ref.sop_instance_uid)] = ref.sop_class_uid
    return found


def refusal(target: Target, holds: list[Hold]) -> FailedPreconditionError:
    """The error that a legal hold refuses a deletion with (it says what to do next)."""
    names = ", ".join(
        f"{hold.level.lower()} {hold.subject}" + (f" ({hold.reason})" if hold.reason else "")
        for hold in holds
    )
    return FailedPreconditionError(
        f"study {target.study_instance_uid} is under legal hold: {names}; nothing was deleted "
        "(release the hold first: pacs hold release)"
    )


async def delete(
    database: Database,
    storage: StorageClient,
    target: Target,
    *,
    caller: audit_events.TokenCaller,
    reason: str = "",
    write_lock: threading.Lock | None = None,
    service: str = "indexer",
) -> DeleteOutcome:
    """Delete what ``target`` names: every stored version through storage (which announces
    ``InstanceDeleted``), then the index rows; audited as DICOM Study Deleted (PS3.15
    A.5.3.6). Idempotent.

    Args:
        caller: who asked (the audit's requestor).
        reason: why (kept in the audit event's description).
        write_lock: the SQLite writer lock of the indexer's consumers, if any.

    Raises:
        InvalidArgumentError: a malformed target.
        FailedPreconditionError: a legal hold covers the study or its patient.
        UnavailableError: storage or the database is unreachable (retry: what was deleted
            stays deleted, the rest is deleted by the retry).
    """
    target.check()
    resolved, holds = await asyncio.to_thread(_resolve, database, target)
    if holds:
        raise refusal(target, holds)
    instances = dict(await _stored(storage, target))
    instances.update({key: cls for key, cls in resolved.instances.items() if cls})
    for key in resolved.instances:
        instances.setdefault(key, "")
    outcome = DeleteOutcome()
    description = f"{target.level} deleted" + (f": {reason}" if reason else "")
    try:
        removed = await _delete_stored(storage, target.tenant, target.study_instance_uid, instances)
        indexed = await asyncio.to_thread(
            _remove_rows, database, target.tenant, [sop for _, sop in instances], write_lock
        )
    except PacsError as exc:
        _audit(caller, service, target, resolved, instances, ok=False, description=exc.message)
        raise
    for key, versions in removed.items():
        if versions or key[1] in indexed:
            outcome.instances += 1
            outcome.versions += versions
            outcome.sop_classes[instances[key] or "unknown"] += 1
    if outcome.instances:
        _audit(caller, service, target, resolved, instances, ok=True, description=description)
    log.info(
        "deleted",
        extra={"level": target.level, "instances": outcome.instances, "versions": outcome.versions},
    )
    return outcome


async def _delete_stored(
    storage: StorageClient, tenant: str, study_uid: str, instances: dict[tuple[str, str], str]
) -> dict[tuple[str, str], int]:
    """Storage Delete (every version) of each instance, a few at a time; versions removed."""
    gate = asyncio.Semaphore(_CONCURRENT_DELETES)

    async def one(series_uid: str, sop_uid: str) -> int:
        ref = instance_pb2.InstanceRef(
            tenant=tenant,
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            sop_instance_uid=sop_uid,
        )
        async with gate:
            return await storage.delete(ref, all_versions=True)

    keys = list(instances)
    counts = await asyncio.gather(*(one(series, sop) for series, sop in keys))
    return dict(zip(keys, counts, strict=True))


def _remove_rows(
    database: Database, tenant: str, sop_uids: list[str], write_lock: threading.Lock | None
) -> set[str]:
    """Remove the instances from the index (tombstoned); the SOP UIDs that were indexed.

    One short transaction per instance, in UID order, each serialized with the consumer's
    write transactions (:func:`shared_with_deletions`; on SQLite the shared writer lock): the
    consumer is handling storage's ``InstanceDeleted`` events for the same rows meanwhile, and
    two such transactions under READ COMMITTED could each count the other's instance as still
    there and leave an empty study behind, or a batch in flight could upsert a late
    ``InstanceStored`` back. A deadlock or serialization failure reported by PostgreSQL anyway
    is retried.
    """
    removed: set[str] = set()
    deleted_time = now_rfc3339()
    for sop_uid in sorted(set(sop_uids)):
        for attempt in range(_ROW_ATTEMPTS):
            try:
                lock: AbstractContextManager[object] = write_lock or nullcontext()
                with lock, database.session() as session:
                    _exclusive(session)
                    if delete_instance(session, tenant, sop_uid, deleted_time):
                        removed.add(sop_uid)
                break
            except UnavailableError as exc:
                if not _conflict(exc) or attempt == _ROW_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
    return removed


def shared_with_deletions(session: Session) -> None:
    """Called by the consumer at the start of each write transaction: on PostgreSQL it takes
    the index-write lock shared (many consumer transactions at once), so that a deletion
    (which takes it exclusively) waits for the batches in flight and the next ones read its
    tombstones. Without it, a batch that read the tombstones before a deletion committed
    could upsert a late ``InstanceStored`` of a deleted instance back, after it. On SQLite the
    consumer's writer lock, which deletions share, already serializes them."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": _WRITE_LOCK})


def _exclusive(session: Session) -> None:
    """Take the index-write lock exclusively (see :func:`shared_with_deletions`)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _WRITE_LOCK})


def _conflict(exc: UnavailableError) -> bool:
    """True when PostgreSQL aborted the transaction for a deadlock or a serialization
    failure (SQLSTATE 40P01 / 40001): retrying it is the documented answer."""
    state = getattr(getattr(exc.__cause__, "orig", None), "sqlstate", "")
    return state in {"40P01", "40001"}


def _audit(
    caller: audit_events.TokenCaller,
    service: str,
    target: Target,
    resolved: _Resolved,
    instances: dict[tuple[str, str], str],
    *,
    ok: bool,
    description: str,
) -> None:
    classes: Counter[str] = Counter(cls or "unknown" for cls in instances.values())
    audit_events.emit(
        audit_events.study_deleted(
            caller,
            service,
            tenant=target.tenant,
            study_instance_uid=target.study_instance_uid,
            patient_id=resolved.patient_id,
            sop_classes=dict(classes),
            ok=ok,
            description=description,
        )
    )

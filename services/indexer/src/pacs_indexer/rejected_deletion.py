"""Deleting rejected instances from storage, by policy (IHE IOCM).

A rejection note hides what it rejects at once (:mod:`pacs_indexer.rejection`); whether the
rejected objects are then removed from storage is the tenant's policy: kept forever (the
default for 113001/113037/113038, so that a wrong rejection can still be investigated), removed
as soon as possible, or removed once a period has passed since the rejection. For 113039 "Data
Retention Policy Expired" deletion is what the sender asks for (IHE RAD TF-2 RAD-66,
Rejection Note Stored), so its default is to delete at once.

A sweep finds the rejected instances that are in storage (seen stored since they were last
deleted) and due, and calls storage's ``Delete`` RPC for every version of each: storage then
announces ``InstanceDeleted``, which every consumer (this indexer included) handles as any other
deletion. The deletion is audited (DICOM Study Deleted, event ID 110105, PS3.15 A.5.3). A
failed call is retried at the next sweep; deleting what is already gone is harmless, so two
indexer replicas sweeping together only announce a deletion twice.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pacs.events.v1 import audit_events_pb2 as audit_pb
from pacs.type.v1 import instance_pb2
from pacs_common import audit_events
from pacs_common.clients.storage import StorageClient
from pacs_common.errors import PacsError
from pacs_common.periodic import PeriodicTask
from sqlalchemy import ColumnElement, and_, or_, select, true, update

from pacs_indexer.database import Database
from pacs_indexer.lifecycle import holds_covering
from pacs_indexer.records import now_rfc3339
from pacs_indexer.rejection import RETENTION_EXPIRED
from pacs_indexer.schema import RejectedInstance

log = logging.getLogger(__name__)

_PAGE = 500


@dataclass(frozen=True)
class RejectionPolicy:
    """How long rejected instances are kept in storage; None means forever.

    Args:
        delete_after: for 113001, 113037 and 113038.
        retention_expired_delete_after: for 113039 "Data Retention Policy Expired".
        by_tenant: per-tenant overrides of ``delete_after`` (not of 113039's).
    """

    delete_after: timedelta | None = None
    retention_expired_delete_after: timedelta | None = timedelta(0)
    by_tenant: Mapping[str, timedelta | None] | None = None

    def keep_for(self, tenant: str, reason_code: str) -> timedelta | None:
        """How long an instance of ``tenant`` rejected with ``reason_code`` is kept."""
        if reason_code == RETENTION_EXPIRED:
            return self.retention_expired_delete_after
        if self.by_tenant and tenant in self.by_tenant:
            return self.by_tenant[tenant]
        return self.delete_after

    def due(self, now: datetime) -> ColumnElement[bool] | None:
        """The SQL condition on ``rejected_instances`` of the rows whose keeping period has
        passed at ``now`` (None: none can be). Times compare as strings: both sides are RFC
        3339 UTC with microseconds (``records.now_rfc3339``)."""
        table = RejectedInstance
        overrides = dict(self.by_tenant or {})
        clauses: list[ColumnElement[bool]] = []
        if self.retention_expired_delete_after is not None:
            clauses.append(
                and_(
                    table.reason_code == RETENTION_EXPIRED,
                    table.rejected_time <= _cutoff(now, self.retention_expired_delete_after),
                )
            )
        others = table.reason_code != RETENTION_EXPIRED
        for tenant, period in overrides.items():
            if period is not None:
                clauses.append(
                    and_(
                        others,
                        table.tenant == tenant,
                        table.rejected_time <= _cutoff(now, period),
                    )
                )
        if self.delete_after is not None:
            clauses.append(
                and_(
                    others,
                    table.tenant.not_in(list(overrides)) if overrides else true(),
                    table.rejected_time <= _cutoff(now, self.delete_after),
                )
            )
        return or_(*clauses) if clauses else None

    @property
    def deletes_anything(self) -> bool:
        """Whether any rejected instance can ever be deleted."""
        periods = [self.delete_after, self.retention_expired_delete_after]
        periods += list((self.by_tenant or {}).values())
        return any(period is not None for period in periods)


@dataclass(frozen=True)
class _Due:
    ref: instance_pb2.InstanceRef
    patient_id: str
    stored_time: str


def _cutoff(now: datetime, period: timedelta) -> str:
    return (now - period).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RejectedDeleter:
    """Sweeps the rejected instances due for deletion and deletes them through storage."""

    def __init__(
        self,
        database: Database,
        storage: StorageClient,
        policy: RejectionPolicy,
        interval_s: float,
        write_lock: threading.Lock | None = None,
    ) -> None:
        self.database = database
        self.storage = storage
        self.policy = policy
        self.interval_s = interval_s
        self._write_lock = write_lock
        self._loop = PeriodicTask("rejected-deletion", self.sweep, interval_s, log)

    def start(self) -> None:
        """Sweep every ``interval_s`` in the background (nothing to do when nothing is ever
        deleted)."""
        if self.policy.deletes_anything:
            self._loop.start()

    async def stop(self) -> None:
        """Stop sweeping (safe to call twice)."""
        await self._loop.stop()

    async def sweep(self, now: datetime | None = None) -> int:
        """Delete every rejected instance due at ``now``; returns how many were deleted."""
        due = await asyncio.to_thread(self._due, now or datetime.now(UTC))
        deleted = 0
        for item in due:
            try:
                await self.storage.delete(item.ref, all_versions=True)
            except PacsError as exc:
                log.warning(
                    "rejected instance not deleted; retried at the next sweep",
                    extra={"sop_instance_uid": item.ref.sop_instance_uid, "error": repr(exc)},
                )
                _audit(item, ok=False)
                continue
            await asyncio.to_thread(self._mark_deleted, item)
            _audit(item, ok=True)
            deleted += 1
        if deleted:
            log.info("rejected instances deleted from storage", extra={"count": deleted})
        return deleted

    def _due(self, now: datetime) -> list[_Due]:
        """Rejected instances in storage whose keeping period has passed (a page of them;
        the next sweep takes the next)."""
        condition = self.policy.due(now)
        if condition is None:
            return []
        stmt = (
            select(RejectedInstance)
            .where(
                RejectedInstance.stored_time != "",
                or_(
                    RejectedInstance.deleted_time == "",
                    RejectedInstance.deleted_time < RejectedInstance.stored_time,
                ),
                condition,
            )
            .order_by(RejectedInstance.rejected_time)
            .limit(_PAGE)
        )
        due: list[_Due] = []
        with self.database.session() as session:
            for row in session.execute(stmt).scalars():
                # A legal hold stops every deletion, this policy's too (the issuer of the
                # rejected instance's Patient ID is not kept: any hold on the ID counts).
                if holds_covering(
                    session, row.tenant, row.study_instance_uid, row.patient_id, None
                ):
                    continue
                ref = instance_pb2.InstanceRef(
                    tenant=row.tenant,
                    study_instance_uid=row.study_instance_uid,
                    series_instance_uid=row.series_instance_uid,
                    sop_instance_uid=row.sop_instance_uid,
                    sop_class_uid=row.sop_class_uid,
                )
                due.append(_Due(ref, row.patient_id, row.stored_time))
        return due

    def _mark_deleted(self, item: _Due) -> None:
        """Deleted now; an object stored again later (stored_time after this) is due again."""
        with self._write_lock or nullcontext(), self.database.session() as session:
            session.execute(
                update(RejectedInstance)
                .where(
                    RejectedInstance.tenant == item.ref.tenant,
                    RejectedInstance.sop_instance_uid == item.ref.sop_instance_uid,
                )
                .values(deleted_time=max(now_rfc3339(), item.stored_time))
            )


def _audit(item: _Due, ok: bool) -> None:
    """DICOM Study Deleted (PS3.15 A.5.3, event ID 110105), action Delete, by the indexer itself."""
    audit_events.emit(
        audit_pb.AuditEvent(
            event_type=audit_pb.AUDIT_EVENT_TYPE_STUDY_DELETED,
            action="D",
            outcome=audit_events.SUCCESS if ok else audit_events.MINOR_FAILURE,
            outcome_description="" if ok else "storage did not delete the rejected instance",
            actors=[audit_events.service_actor("indexer")],
            tenant=item.ref.tenant,
            patient_id=item.patient_id,
            study_instance_uids=[item.ref.study_instance_uid],
            sop_classes=[
                audit_pb.SopClassCount(sop_class_uid=item.ref.sop_class_uid, number_of_instances=1)
            ],
        )
    )

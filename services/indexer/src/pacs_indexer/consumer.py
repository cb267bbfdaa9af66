"""Keeping the index in step with storage: handling ``InstanceStored`` and ``InstanceDeleted``.

The header of a stored instance comes in its ``InstanceStored`` event when storage could put it
there (see ``header_part10`` in the proto); only otherwise is it read back from storage.

Each event is applied idempotently (keyed by tenant + SOP Instance UID), and only after the
database transaction committed is ``InstanceIndexed`` announced; the consumer loop commits the
Kafka offset after that. A crash anywhere therefore means the event is handled again, which
changes nothing that was already done.

Events come in batches of one partition's consecutive records (:meth:`handle_batch`): what each
needs from outside the database (its header, the version now current after a delete) is
gathered first, then the whole batch is applied in offset order in one transaction (runs of
stored instances as one set-based upsert, a delete between them where it came), and the
``InstanceIndexed`` events are sent together. Applying a run in one upsert ends as applying its
events one by one would: the version stored later wins, and a delete splits the runs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

from aiokafka import ConsumerRecord
from google.protobuf.message import DecodeError
from pacs.events.v1 import instance_events_pb2 as events_pb
from pacs.type.v1 import instance_pb2
from pacs_common.errors import InvalidArgumentError, NotFoundError
from pacs_common.events import (
    TOPIC_INDEXED,
    TOPIC_WORKFLOW,
    EventPublisher,
    event_type,
    header,
    now_rfc3339,
)
from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from pacs_indexer.database import Database
from pacs_indexer.extra_attributes import ExtraAttributes
from pacs_indexer.header import HeaderReader, parse_event_header
from pacs_indexer.indexing import delete_instance, upsert_instances
from pacs_indexer.lifecycle import shared_with_deletions
from pacs_indexer.records import InstanceRecord, StoredObject, record_from_dataset
from pacs_indexer.report_index import replace_measurements, report_event
from pacs_indexer.reports import MeasurementRow, is_structured_report, measurements

log = logging.getLogger(__name__)

_STORED = event_type(events_pb.InstanceStored())
_DELETED = event_type(events_pb.InstanceDeleted())


@dataclass(frozen=True)
class _Upsert:
    record: InstanceRecord
    ref: instance_pb2.InstanceRef
    # An SR's header and measurements, indexed beyond the header (pacs_indexer.reports).
    report: tuple[Dataset, list[MeasurementRow]] | None = None


@dataclass(frozen=True)
class _Delete:
    tenant: str
    sop_instance_uid: str
    deleted_time: str


_Step = _Upsert | _Delete


def _key(ref: instance_pb2.InstanceRef) -> tuple[str, str]:
    return ref.tenant, ref.sop_instance_uid


class IndexEventHandler:
    """Applies storage events to the index and announces what became queryable."""

    def __init__(
        self,
        database: Database,
        headers: HeaderReader,
        publisher: EventPublisher,
        extras: ExtraAttributes | None = None,
    ) -> None:
        self.database = database
        self.headers = headers
        self.publisher = publisher
        self.extras = extras or ExtraAttributes()
        # SQLite has one writer: concurrent partitions' transactions wait here, not in
        # "database is locked" retries.
        self._write_lock = threading.Lock() if database.dialect == "sqlite" else None

    @property
    def write_lock(self) -> threading.Lock | None:
        """The SQLite writer lock, shared with the workflow consumer's writes."""
        return self._write_lock

    async def handle_batch(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Handle consecutive records of one partition in one database transaction.

        Raises:
            InvalidArgumentError: some record is invalid (the consumer then handles the batch
                one record at a time, so that only that one is dead-lettered).
        """
        steps: list[_Step] = []
        for record in records:
            steps += await self._steps_of(record)
        if not steps:
            return
        written = await asyncio.to_thread(self._apply, steps)
        # Only reports that were indexed: not a rejected one (IOCM) nor an older version.
        shown = {_key(ref) for ref in written}
        await self._announce_reports(
            [s for s in steps if isinstance(s, _Upsert) and _key(s.ref) in shown]
        )
        await self.publisher.publish_many(
            TOPIC_INDEXED,
            [
                (
                    ref.study_instance_uid,
                    events_pb.InstanceIndexed(instance=ref, indexed_time=now_rfc3339()),
                )
                for ref in written
            ],
        )

    async def _steps_of(self, record: ConsumerRecord[bytes, bytes]) -> list[_Step]:
        """What one event does to the index, with everything read from outside it."""
        kind = header(record, "ce_type")
        try:
            if kind == _STORED:
                stored = events_pb.InstanceStored.FromString(record.value or b"")
                upsert = await self._upsert_of(stored.object, stored.header_part10)
                return [] if upsert is None else [upsert]
            if kind == _DELETED:
                deleted = events_pb.InstanceDeleted.FromString(record.value or b"")
                ref = deleted.instance
                current = None if deleted.all_versions else await self._current(ref)
                tombstone = deleted.deleted_time if current is None else ""
                steps: list[_Step] = [_Delete(ref.tenant, ref.sop_instance_uid, tombstone)]
                if current is not None:
                    upsert = await self._upsert_of(current)
                    steps += [] if upsert is None else [upsert]
                return steps
        except DecodeError as exc:
            raise InvalidArgumentError(f"undecodable {kind} payload: {exc}") from exc
        log.debug("ignoring event", extra={"ce_type": kind, "offset": record.offset})
        return []

    def _apply(self, steps: Sequence[_Step]) -> list[instance_pb2.InstanceRef]:
        """Apply ``steps`` in order in one transaction; return the refs of what was written."""
        written: list[instance_pb2.InstanceRef] = []
        with self._writing() as session:
            run: list[_Upsert] = []
            for step in [*steps, None]:
                if isinstance(step, _Upsert):
                    run.append(step)
                    continue
                if run:
                    self._write_reports(session, run)
                    refs = {
                        (u.record.tenant, u.record.sop_instance_uid, u.record.stored): u.ref
                        for u in run
                    }
                    for r in upsert_instances(session, [u.record for u in run], self.extras):
                        written.append(refs[(r.tenant, r.sop_instance_uid, r.stored)])
                    run = []
                if isinstance(step, _Delete):
                    delete_instance(session, step.tenant, step.sop_instance_uid, step.deleted_time)
        return written

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """One write transaction (on SQLite, one at a time)."""
        with self._write_lock or nullcontext(), self.database.session() as session:
            shared_with_deletions(session)  # a deletion in progress finishes first
            yield session

    async def __call__(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Handle one Kafka record; unknown event types are skipped (and committed)."""
        kind = header(record, "ce_type")
        try:
            if kind == _STORED:
                stored = events_pb.InstanceStored.FromString(record.value or b"")
                await self.index_object(stored.object, stored.header_part10)
            elif kind == _DELETED:
                deleted = events_pb.InstanceDeleted.FromString(record.value or b"")
                await self.instance_deleted(
                    deleted.instance, deleted.all_versions, deleted.deleted_time
                )
            else:
                log.debug("ignoring event", extra={"ce_type": kind, "offset": record.offset})
        except DecodeError as exc:
            raise InvalidArgumentError(f"undecodable {kind} payload: {exc}") from exc

    async def index_object(self, info: instance_pb2.ObjectInfo, header_part10: bytes = b"") -> None:
        """Upsert one stored object's header and announce ``InstanceIndexed``.

        The header comes from the event when storage put it there (``header_part10``); it is
        read from storage otherwise (over storage's cap, older events, reindexing).
        """
        upsert = await self._upsert_of(info, header_part10)
        if upsert is None:
            return
        written = await asyncio.to_thread(self._upsert, upsert)
        if written:
            await self._announce_reports([upsert])
            await self._announce(upsert.ref)

    async def index_objects(self, infos: Sequence[instance_pb2.ObjectInfo]) -> None:
        """Index many stored objects at once (reindexing): their headers read from storage
        concurrently, then one transaction and one batch of ``InstanceIndexed``, as a batch
        of events is applied (one object at a time would cost a transaction and a Kafka round
        trip each: the serial reindex ran at about 30 instances/s, docs/operations.md)."""
        found = await asyncio.gather(*(self._upsert_of(info) for info in infos))
        upserts = [u for u in found if u is not None]
        if not upserts:
            return
        written = await asyncio.to_thread(self._apply, upserts)
        await self._announce_reports(upserts)
        await self.publisher.publish_many(
            TOPIC_INDEXED,
            [
                (
                    ref.study_instance_uid,
                    events_pb.InstanceIndexed(instance=ref, indexed_time=now_rfc3339()),
                )
                for ref in written
            ],
        )

    async def _upsert_of(
        self, info: instance_pb2.ObjectInfo, header_part10: bytes = b""
    ) -> _Upsert | None:
        """The record of one stored object, its header from the event or from storage; None
        when the object is gone from storage already."""
        ref = info.instance
        if header_part10:
            # Parsing and the DICOM JSON are CPU work (milliseconds per header): off the event
            # loop, so that a batch never starves the consumer's heartbeats into a rebalance.
            return await asyncio.to_thread(self._upsert_from_header, info, header_part10)
        try:
            dataset = await self.headers.read(ref, info.size)
        except NotFoundError:
            # Removed since it was announced: its InstanceDeleted follows on the same
            # partition.
            log.info("stored object already gone", extra={"sop_instance_uid": ref.sop_instance_uid})
            return None
        return await asyncio.to_thread(self._upsert_from_dataset, info, dataset)

    def _upsert_from_header(self, info: instance_pb2.ObjectInfo, header_part10: bytes) -> _Upsert:
        return self._upsert_from_dataset(info, parse_event_header(header_part10))

    def _upsert_from_dataset(self, info: instance_pb2.ObjectInfo, dataset: Dataset) -> _Upsert:
        ref = info.instance
        stored = StoredObject(
            key=info.key,
            size=info.size,
            sha256=info.sha256,
            version_id=info.version_id,
            stored_time=info.stored_time,
            transfer_syntax_uid=ref.transfer_syntax_uid
            or str(getattr(dataset.file_meta, "TransferSyntaxUID", "") or ""),
        )
        record = record_from_dataset(
            ref.tenant, dataset, stored, self.extras.values_of(dataset) if self.extras else ()
        )
        report = (dataset, measurements(dataset)) if is_structured_report(dataset) else None
        return _Upsert(record, ref, report)

    async def _current(self, ref: instance_pb2.InstanceRef) -> instance_pb2.ObjectInfo | None:
        try:
            return await self.headers.head(ref)
        except NotFoundError:
            return None

    def _upsert(self, upsert: _Upsert) -> bool:
        with self._writing() as session:
            self._write_reports(session, [upsert])
            return bool(upsert_instances(session, [upsert.record], self.extras))

    @staticmethod
    def _write_reports(session: Session, upserts: Sequence[_Upsert]) -> None:
        """Index the measurements of the structured reports among ``upserts``."""
        for upsert in upserts:
            if upsert.report is not None:
                replace_measurements(session, upsert.record.tenant, *upsert.report)

    async def _announce_reports(self, upserts: Sequence[_Upsert]) -> None:
        """``ReportIndexed`` for each report, keyed by patient like the workflow events (the
        hl7 service sends it on as ORU^R01)."""
        reports = [
            (f"{u.record.tenant}/{u.record.patient_id}", report_event(u.record.tenant, *u.report))
            for u in upserts
            if u.report is not None
        ]
        await self.publisher.publish_many(TOPIC_WORKFLOW, reports)

    async def instance_deleted(
        self, ref: instance_pb2.InstanceRef, all_versions: bool, deleted_time: str = ""
    ) -> None:
        """Remove an instance; when only its current version went, index the one now current.

        The removed version is dropped first: the earlier version is older, and the index
        would otherwise keep the newer one it already has.
        """
        current = None if all_versions else await self._current(ref)
        # Only a removal of every version is final; otherwise an older version is current now
        # and must not be held back by a tombstone.
        tombstone = deleted_time if current is None else ""
        await asyncio.to_thread(self._delete, ref.tenant, ref.sop_instance_uid, tombstone)
        if current is not None:
            await self.index_object(current)

    def _delete(self, tenant: str, sop_instance_uid: str, deleted_time: str) -> None:
        with self._writing() as session:
            delete_instance(session, tenant, sop_instance_uid, deleted_time)

    async def _announce(self, ref: instance_pb2.InstanceRef) -> None:
        event = events_pb.InstanceIndexed(instance=ref, indexed_time=now_rfc3339())
        await self.publisher.publish(TOPIC_INDEXED, ref.study_instance_uid, event)

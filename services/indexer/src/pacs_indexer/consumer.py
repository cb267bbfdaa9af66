"""Keeping the index in step with storage: handling ``InstanceStored`` and ``InstanceDeleted``.

The header of a stored instance comes in its ``InstanceStored`` event when storage could put it
there (see ``header_part10`` in the proto); only otherwise is it read back from storage.

Each event is applied idempotently (keyed by tenant + SOP Instance UID), and only after the
database transaction committed is ``InstanceIndexed`` announced; the consumer loop commits the
Kafka offset after that. A crash anywhere therefore means the event is handled again, which
changes nothing that was already done.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import ConsumerRecord
from google.protobuf.message import DecodeError
from pacs.events.v1 import instance_events_pb2 as events_pb
from pacs.type.v1 import instance_pb2
from pacs_common.errors import InvalidArgumentError, NotFoundError
from pacs_common.events import TOPIC_INDEXED, EventPublisher, event_type, header, now_rfc3339

from pacs_indexer.database import Database
from pacs_indexer.extra_attributes import ExtraAttributes
from pacs_indexer.header import HeaderReader, parse_event_header
from pacs_indexer.indexing import delete_instance, upsert_instances
from pacs_indexer.records import InstanceRecord, StoredObject, record_from_dataset

log = logging.getLogger(__name__)

_STORED = event_type(events_pb.InstanceStored())
_DELETED = event_type(events_pb.InstanceDeleted())


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
        ref = info.instance
        if header_part10:
            dataset = parse_event_header(header_part10)
        else:
            try:
                dataset = await self.headers.read(ref, info.size)
            except NotFoundError:
                # Removed since it was announced: its InstanceDeleted follows on the same
                # partition.
                log.info(
                    "stored object already gone", extra={"sop_instance_uid": ref.sop_instance_uid}
                )
                return
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
        written = await asyncio.to_thread(self._upsert, record)
        if written:
            await self._announce(ref)

    def _upsert(self, record: InstanceRecord) -> bool:
        with self.database.session() as session:
            return bool(upsert_instances(session, [record], self.extras))

    async def instance_deleted(
        self, ref: instance_pb2.InstanceRef, all_versions: bool, deleted_time: str = ""
    ) -> None:
        """Remove an instance; when only its current version went, index the one now current.

        The removed version is dropped first: the earlier version is older, and the index
        would otherwise keep the newer one it already has.
        """
        current: instance_pb2.ObjectInfo | None = None
        if not all_versions:
            try:
                current = await self.headers.head(ref)
            except NotFoundError:
                current = None
        # Only a removal of every version is final; otherwise an older version is current now
        # and must not be held back by a tombstone.
        tombstone = deleted_time if current is None else ""
        await asyncio.to_thread(self._delete, ref.tenant, ref.sop_instance_uid, tombstone)
        if current is not None:
            await self.index_object(current)

    def _delete(self, tenant: str, sop_instance_uid: str, deleted_time: str) -> None:
        with self.database.session() as session:
            delete_instance(session, tenant, sop_instance_uid, deleted_time)

    async def _announce(self, ref: instance_pb2.InstanceRef) -> None:
        event = events_pb.InstanceIndexed(instance=ref, indexed_time=now_rfc3339())
        await self.publisher.publish(TOPIC_INDEXED, ref.study_instance_uid, event)

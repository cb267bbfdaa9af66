"""Consuming the audit topic into the trail, a batch per transaction, idempotent on event id."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import ConsumerRecord
from google.protobuf.message import DecodeError
from pacs.events.v1 import audit_events_pb2 as audit_pb
from pacs_common.errors import InvalidArgumentError

from pacs_audit.checkpoints import Checkpointer
from pacs_audit.trail import Trail

log = logging.getLogger(__name__)


def _event(record: ConsumerRecord[bytes, bytes]) -> audit_pb.AuditEvent:
    try:
        event = audit_pb.AuditEvent.FromString(record.value or b"")
    except DecodeError as exc:
        raise InvalidArgumentError("not an AuditEvent") from exc
    if not event.id:
        raise InvalidArgumentError("AuditEvent without an id")
    return event


class AuditEventHandler:
    """Appends consumed events to the trail, then signs a checkpoint when one is due."""

    def __init__(self, trail: Trail, checkpointer: Checkpointer) -> None:
        self.trail = trail
        self.checkpointer = checkpointer
        self.stored = 0

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """One record (the consumer's fallback when a batch failed)."""
        await self.handle_batch([record])

    async def handle_batch(self, batch: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Consecutive records of one partition, stored in one transaction.

        Raises:
            InvalidArgumentError: a record is not an AuditEvent (dead-lettered, alone).
            UnavailableError: the database is down (the batch is retried).
        """
        events = [_event(record) for record in batch]
        self.stored += await asyncio.to_thread(self.trail.append, events)
        await asyncio.to_thread(self.checkpointer.maybe_sign)

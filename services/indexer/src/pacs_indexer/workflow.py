"""Applying the hl7 service's workflow events to the index (topic ``pacs.workflow.v1``).

- ``PatientUpdated`` (ADT A01/A04/A08/A31): the index's patient update
  (:func:`pacs_indexer.patients.update_patient`: demographics locked, stored headers patched,
  history in ``patient_merges``) when the patient has images, and the worklist items' patient
  attributes;
- ``PatientsMerged`` (A40): :func:`pacs_indexer.patients.merge_patients` moves the source's
  studies to the target (history kept), and the worklist items follow;
- ``OrderPlaced`` / ``OrderChanged`` / ``OrderCancelled``: :mod:`pacs_indexer.worklist`.

The consumer hands each partition's records in offset order (a batch of them in one transaction,
partitions side by side), and each patient's events share a partition (key
``tenant/PatientID``), so a patient's messages apply in the order the hospital sent them. Each
event is applied once per (tenant, sender, control ID, subject) in the same transaction as its
effect (``applied_messages``), so a redelivered event or a message the sender resent after a
lost ACK changes nothing. Events this consumer does not handle (those the indexer
itself publishes on the topic) are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from contextlib import nullcontext

from aiokafka import ConsumerRecord
from google.protobuf.message import DecodeError
from pacs.events.v1 import workflow_events_pb2 as events
from pacs_common.errors import InvalidArgumentError, NotFoundError
from pacs_common.events import event_type, header
from sqlalchemy import select
from sqlalchemy.orm import Session

from pacs_indexer import worklist
from pacs_indexer.database import Database
from pacs_indexer.patients import merge_patients, update_patient
from pacs_indexer.records import now_rfc3339
from pacs_indexer.schema import AppliedMessage

log = logging.getLogger(__name__)

_TYPES = {
    event_type(message()): message
    for message in (
        events.PatientUpdated,
        events.PatientsMerged,
        events.OrderPlaced,
        events.OrderChanged,
        events.OrderCancelled,
    )
}


class WorkflowHandler:
    """The consumer handler of ``pacs.workflow.v1`` in the indexer."""

    def __init__(self, database: Database, write_lock: threading.Lock | None = None) -> None:
        self.database = database
        self._write_lock = write_lock

    async def __call__(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Apply one event (idempotently).

        Raises:
            InvalidArgumentError: the payload cannot be decoded (dead-lettered).
        """
        event = _decode(record)
        if event is not None:
            await asyncio.to_thread(self.apply, event)

    async def handle_batch(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Apply consecutive records of one partition in offset order in one transaction (a
        patient's events share a partition, so their order holds).

        Raises:
            InvalidArgumentError: some record is invalid (the consumer then handles the batch
                one record at a time, so that only that one is dead-lettered).
        """
        events = [e for e in (_decode(r) for r in records) if e is not None]
        if events:
            await asyncio.to_thread(self.apply_all, events)

    def apply(self, event: object) -> bool:
        """Apply one decoded event in one transaction; False if it was applied before."""
        return self.apply_all([event]) == 1

    def apply_all(self, events: Sequence[object]) -> int:
        """Apply decoded events in order in one transaction; how many were new."""
        applied = 0
        with self._write_lock or nullcontext(), self.database.session() as session:
            for event in events:
                origin = event.origin  # type: ignore[attr-defined]
                if _seen(session, origin, _subject(event)):
                    continue
                _apply(session, origin.tenant, event)
                session.flush()
                applied += 1
        return applied


def _decode(record: ConsumerRecord[bytes, bytes]) -> object | None:
    """The event of a record; None for types this consumer does not handle."""
    kind = header(record, "ce_type") or ""
    message_class = _TYPES.get(kind)
    if message_class is None:
        return None
    try:
        return message_class.FromString(record.value or b"")
    except DecodeError as exc:
        raise InvalidArgumentError(f"undecodable {kind} payload: {exc}") from exc


def _subject(event: object) -> str:
    if isinstance(event, (events.OrderPlaced, events.OrderChanged, events.OrderCancelled)):
        return f"order/{event.step.order_number}/{event.step.step_id}"
    if isinstance(event, events.PatientsMerged):
        return f"merge/{event.source.patient_id}/{event.source.issuer_of_patient_id}"
    if isinstance(event, events.PatientUpdated):
        return f"patient/{event.patient.patient_id}/{event.patient.issuer_of_patient_id}"
    return ""


def _seen(session: Session, origin: events.MessageOrigin, subject: str) -> bool:
    found = session.execute(
        select(AppliedMessage.control_id).where(
            AppliedMessage.tenant == origin.tenant,
            AppliedMessage.sender == origin.sender,
            AppliedMessage.control_id == origin.control_id,
            AppliedMessage.subject == subject,
        )
    ).first()
    if found is not None:
        return True
    session.add(
        AppliedMessage(
            tenant=origin.tenant,
            sender=origin.sender,
            control_id=origin.control_id,
            subject=subject,
            applied_time=now_rfc3339(),
        )
    )
    return False


def _apply(session: Session, tenant: str, event: object) -> None:
    if isinstance(event, events.PatientUpdated):
        patient = event.patient
        _update_demographics(session, tenant, patient)
        worklist.repoint_patient(
            session, tenant, (patient.patient_id, patient.issuer_of_patient_id), patient
        )
    elif isinstance(event, events.PatientsMerged):
        source = (event.source.patient_id, event.source.issuer_of_patient_id)
        target = (event.target.patient_id, event.target.issuer_of_patient_id)
        try:
            moved = merge_patients(session, tenant, source, target)
            log.info("patients merged", extra={"studies_moved": moved})
        except NotFoundError:
            pass  # the source has no images here
        _update_demographics(session, tenant, event.target)
        worklist.repoint_patient(session, tenant, source, event.target)
    elif isinstance(event, (events.OrderPlaced, events.OrderChanged)):
        worklist.schedule(session, tenant, event.patient, event.step)
    elif isinstance(event, events.OrderCancelled):
        worklist.cancel(
            session, tenant, event.step, event.action == events.ORDER_ACTION_DISCONTINUE
        )


def _update_demographics(session: Session, tenant: str, patient: events.Patient) -> None:
    """The registry's demographics on the indexed patient, when it has images here."""
    if not (patient.patient_name or patient.patient_birth_date or patient.patient_sex):
        return
    # NotFoundError: no images of this patient yet, the worklist items are all there is.
    with contextlib.suppress(NotFoundError):
        update_patient(
            session,
            tenant,
            patient.patient_id,
            patient.issuer_of_patient_id,
            name=patient.patient_name or None,
            birth_date=patient.patient_birth_date or None,
            sex=patient.patient_sex or None,
        )

"""Storage Commitment Push Model SCP (PS3.4 Annex J).

A sender asks, with N-ACTION "Request Storage Commitment", whether the gateway takes
responsibility for a list of SOP instances (PS3.4 J.3.2). The N-ACTION is answered at once;
the check runs in the background: each instance must be found in the caller's tenant in the
index and be present in storage (Head), with the SOP class the sender named. The result goes
back as N-EVENT-REPORT (PS3.4 J.3.3), event 1 when every instance is committed, event 2 with a
Failed SOP Sequence otherwise. It is sent on the requesting association while that is still
open, else on a new association to the caller's AE title registered as a destination of its
tenant, proposing the SCP role for the Storage Commitment SOP class (PS3.4 J.3.3, PS3.7 D.3.3.4).

**No request is lost to a restart.** Before the N-ACTION is answered, the request is recorded in
the index (:class:`CommitmentJournal`); it is forgotten once its report was delivered, or can
never be (the caller is no registered destination). A request whose process died, or whose
caller could not be reached, is claimed by :mod:`pacs_gateway.dimse.commitment_recovery` in
some gateway process and reported on a new association. If it cannot be recorded, the N-ACTION
is refused with 0x0213 (resource limitation) and the modality asks again later.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pacs.query.v1 import query_service_pb2 as query_pb
from pacs.type.v1 import instance_pb2
from pacs_common.clients.errors import from_exception
from pacs_common.clients.query import QueryClient
from pacs_common.clients.storage import StorageClient
from pacs_common.errors import PacsError
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE
from pynetdicom.presentation import build_context, build_role

from pacs_gateway.admission import Caller, CallerOf
from pacs_gateway.dimse import codes
from pacs_gateway.dimse.c_find import Finder
from pacs_gateway.dimse.contexts import UNCOMPRESSED
from pacs_gateway.dimse.find_identifier import FindRequest, instance_ref_of_match
from pacs_gateway.dimse.handler_base import DimseFailure, DimseHandler
from pacs_gateway.ingest import RecentInstances
from pacs_gateway.io_loop import IoLoop
from pacs_gateway.outbound import association_kwargs
from pacs_gateway.registry import DestinationOf

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reference:
    """One SOP instance a sender asks about."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class Outcome:
    """The commitment result of one transaction."""

    committed: list[Reference]
    failed: list[tuple[Reference, int]]


@dataclass(frozen=True)
class Committer:
    """Checks references against the index and storage, waiting up to ``wait_s`` (polling
    every ``poll_s``) for instances to be indexed."""

    finder: Finder
    storage: StorageClient
    recent: RecentInstances
    wait_s: float
    poll_s: float = 0.5

    async def check(self, tenant: str, references: list[Reference]) -> Outcome:
        """Which references are durable in ``tenant``. Instances this process stored are
        located from memory; the others through the index, which may not have caught up with
        instances stored moments ago (by another worker), so missing ones are looked up again
        until ``wait_s`` has passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        found: dict[str, instance_pb2.InstanceRef] = {}
        for reference in references:
            ref = self.recent.get(tenant, reference.sop_instance_uid)
            if ref is not None:
                found[reference.sop_instance_uid] = ref
        while True:
            missing = [r for r in references if r.sop_instance_uid not in found]
            try:
                found.update(await self._locate(tenant, missing))
            except PacsError as exc:
                log.warning("storage commitment lookup failed", extra={"error": exc.message})
                if loop.time() >= deadline:
                    return Outcome([], [(r, codes.RESOURCE_LIMITATION) for r in references])
            if all(r.sop_instance_uid in found for r in references) or loop.time() >= deadline:
                break
            await asyncio.sleep(self.poll_s)
        committed: list[Reference] = []
        failed: list[tuple[Reference, int]] = []
        for reference in references:
            ref = found.get(reference.sop_instance_uid)
            if ref is None:
                failed.append((reference, codes.NO_SUCH_OBJECT_INSTANCE))
            elif ref.sop_class_uid and ref.sop_class_uid != reference.sop_class_uid:
                failed.append((reference, codes.CLASS_INSTANCE_CONFLICT))
            elif not await self._durable(ref):
                failed.append((reference, codes.NO_SUCH_OBJECT_INSTANCE))
            else:
                committed.append(reference)
        return Outcome(committed, failed)

    async def _locate(
        self, tenant: str, references: list[Reference]
    ) -> dict[str, instance_pb2.InstanceRef]:
        if not references:
            return {}
        match = {
            "SOPInstanceUID": "\\".join(r.sop_instance_uid for r in references),
            "SOPClassUID": "",
        }
        query = FindRequest("IMAGE", Dataset(), match).query(tenant, limit=len(references))
        page, _ = await self.finder.find("IMAGE", query)
        refs = (instance_ref_of_match(text, tenant) for text in page)
        return {ref.sop_instance_uid: ref for ref in refs}

    async def _durable(self, ref: instance_pb2.InstanceRef) -> bool:
        try:
            await self.storage.head(ref)
        except Exception as exc:
            log.info(
                "committed instance not in storage",
                extra={
                    "sop_instance_uid": ref.sop_instance_uid,
                    "error": str(from_exception(exc, "storage")),
                },
            )
            return False
        return True


def references_of(action_information: Dataset) -> tuple[str, list[Reference]]:
    """Transaction UID and references of a commitment request (PS3.4 J.3.2.1.1).

    Raises:
        ValueError: Transaction UID or Referenced SOP Sequence missing or empty.
    """
    transaction = str(action_information.get("TransactionUID", "") or "").strip()
    items = action_information.get("ReferencedSOPSequence") or []
    if not transaction or not items:
        raise ValueError("TransactionUID and ReferencedSOPSequence are required")
    references = [
        Reference(
            str(item.get("ReferencedSOPClassUID", "") or ""),
            str(item.get("ReferencedSOPInstanceUID", "") or ""),
        )
        for item in items
    ]
    return transaction, references


def event_information(transaction: str, outcome: Outcome, ae_title: str) -> Dataset:
    """The N-EVENT-REPORT Event Information (PS3.4 J.3.3.1, Table J.3-2)."""
    dataset = Dataset()
    dataset.TransactionUID = transaction
    dataset.RetrieveAETitle = ae_title
    committed = Sequence()
    for reference in outcome.committed:
        item = Dataset()
        item.ReferencedSOPClassUID = reference.sop_class_uid
        item.ReferencedSOPInstanceUID = reference.sop_instance_uid
        committed.append(item)
    dataset.ReferencedSOPSequence = committed
    if outcome.failed:
        failed = Sequence()
        for reference, reason in outcome.failed:
            item = Dataset()
            item.ReferencedSOPClassUID = reference.sop_class_uid
            item.ReferencedSOPInstanceUID = reference.sop_instance_uid
            item.FailureReason = reason
            failed.append(item)
        dataset.FailedSOPSequence = failed
    return dataset


def _pause_reactor(assoc: Any, within_s: float = 10.0) -> bool:
    """Hold pynetdicom's acceptor reactor before sending from another thread.

    ``send_n_event_report`` pauses the reactor itself, but it takes a single glimpse of the
    paused flag, which the reactor also raises for an instant on every loop iteration; if the
    glimpse falls in that instant, the reactor goes on and swallows our response. Seeing the
    flag raised twice, 10 ms apart, means it really waits (its loop turns every millisecond).
    ``send_n_event_report`` releases the reactor when done. Returns False if the association
    closed meanwhile (the reactor is then released).
    """
    assoc._reactor_checkpoint.clear()
    deadline = time.monotonic() + within_s
    while assoc.is_established and time.monotonic() < deadline:
        if assoc._is_paused:
            time.sleep(0.01)
            if assoc._is_paused:
                return True
        else:
            time.sleep(0.001)
    assoc._reactor_checkpoint.set()
    return False


@dataclass(frozen=True)
class CommitmentJournal:
    """Where requests wait for their report: the indexer's pending commitments (see the
    module docstring)."""

    query: QueryClient

    async def record(
        self, tenant: str, calling_ae_title: str, transaction: str, references: list[Reference]
    ) -> None:
        """Durable on return."""
        await self.query.record_commitment(
            query_pb.CommitmentRequest(
                tenant=tenant,
                transaction_uid=transaction,
                calling_ae_title=calling_ae_title,
                references=[
                    query_pb.CommitmentReference(
                        sop_class_uid=r.sop_class_uid, sop_instance_uid=r.sop_instance_uid
                    )
                    for r in references
                ],
                requested_time=datetime.now(UTC).isoformat(),
            )
        )

    async def complete(self, tenant: str, transaction: str) -> None:
        await self.query.complete_commitment(tenant, transaction)


class Delivery(enum.Enum):
    """What became of a report."""

    SENT = "sent"
    UNDELIVERABLE = "undeliverable"  # never can be: forget the request
    RETRY_LATER = "retry-later"  # the caller could not be reached: recovery tries again


class Reporter:
    """Sends N-EVENT-REPORTs (PS3.4 J.3.3): on the requesting association while it is open,
    else on a new association to the caller's registered destination."""

    def __init__(self, ae_title: str, destination_of: DestinationOf) -> None:
        # An AE of its own for the report associations it opens (requestor side).
        self._ae = AE(ae_title=ae_title)
        self._destination_of = destination_of

    def report(
        self,
        assoc: Any | None,
        tenant: str,
        calling_ae_title: str,
        transaction: str,
        outcome: Outcome,
    ) -> Delivery:
        """Blocking (pynetdicom); call from a thread."""
        ae = self._ae
        information = event_information(transaction, outcome, ae.ae_title)
        event_type = codes.EVENT_FAILURES_EXIST if outcome.failed else codes.EVENT_ALL_COMMITTED
        log.info(
            "storage commitment result",
            extra={
                "transaction_uid": transaction,
                "committed": len(outcome.committed),
                "failed": len(outcome.failed),
            },
        )
        if assoc is not None and assoc.is_established and _pause_reactor(assoc):
            answer, _ = assoc.send_n_event_report(
                information,
                event_type,
                codes.STORAGE_COMMITMENT_PUSH,
                codes.STORAGE_COMMITMENT_INSTANCE,
            )
            if answer and "Status" in answer:
                return Delivery.SENT
            # The requester released meanwhile (it ignores reports during release) or did not
            # answer: deliver on a new association instead (PS3.4 J.3.3).
            log.info("storage commitment report unanswered; retrying on a new association")
        destination = self._destination_of(tenant, calling_ae_title)
        if destination is None:
            log.warning(
                "storage commitment report undeliverable: association closed and the caller "
                "is not a registered destination",
                extra={"calling_ae_title": calling_ae_title},
            )
            return Delivery.UNDELIVERABLE
        kwargs = association_kwargs(
            destination, [build_context(codes.STORAGE_COMMITMENT_PUSH, UNCOMPRESSED)]
        )
        kwargs["ext_neg"] = [
            build_role(codes.STORAGE_COMMITMENT_PUSH, scu_role=False, scp_role=True)
        ]
        report = ae.associate(
            destination.host, destination.port, ae_title=destination.ae_title, **kwargs
        )
        if not report.is_established:
            log.warning("storage commitment report: association to the caller failed")
            return Delivery.RETRY_LATER
        try:
            answer, _ = report.send_n_event_report(
                information,
                event_type,
                codes.STORAGE_COMMITMENT_PUSH,
                codes.STORAGE_COMMITMENT_INSTANCE,
            )
        finally:
            report.release()
        return Delivery.SENT if answer and "Status" in answer else Delivery.RETRY_LATER


MAX_PENDING_COMMITMENTS = 32
"""Storage Commitment requests one process checks and reports at once; more are refused with
0x0213 (resource limitation) instead of each taking another thread."""


class StorageCommitmentScp(DimseHandler):
    """Handles EVT_N_ACTION for the Storage Commitment Push Model."""

    operation = "N-ACTION"
    required_role = "ingest"
    # PS3.4 J.3.2 / PS3.7 C: "retry later" for N-ACTION is a resource limitation.
    unavailable_status = codes.RESOURCE_LIMITATION
    unavailable_comment = "the request could not be recorded; ask again later"

    def __init__(
        self,
        committer: Committer,
        *,
        io: IoLoop,
        reporter: Reporter,
        journal: CommitmentJournal | None,
        caller_of: CallerOf,
        timeout_s: float,
        max_pending: int = MAX_PENDING_COMMITMENTS,
    ) -> None:
        super().__init__(io, caller_of, timeout_s)
        self._max_pending = max_pending
        self._committer = committer
        self._reporter = reporter
        self._journal = journal
        self._workers: set[threading.Thread] = set()

    def handle_action(self, event: Any) -> tuple[Dataset, Dataset | None]:
        """EVT_N_ACTION: accept the request (the result follows as N-EVENT-REPORT)."""
        return self.answer(lambda: self._accept(event)), None

    def _accept(self, event: Any) -> Dataset:
        """Check the request (PS3.4 J.3.2) and start the commitment check in the background."""
        request = event.request
        caller = self.caller(event)
        if str(request.RequestedSOPInstanceUID) != codes.STORAGE_COMMITMENT_INSTANCE:
            raise DimseFailure(codes.INVALID_SOP_INSTANCE, "not the well-known instance")
        if request.ActionTypeID != codes.REQUEST_STORAGE_COMMITMENT:
            raise DimseFailure(codes.NO_SUCH_ACTION_TYPE, "only Request Storage Commitment")
        try:
            transaction, references = references_of(event.action_information)
        except Exception as exc:
            raise DimseFailure(codes.MISSING_ATTRIBUTE, str(exc)) from exc
        if len(self._workers) >= self._max_pending:
            # Bounded work: each request holds a thread until its report is sent. Refused
            # requests change nothing; the modality asks again later (PS3.7 C, 0x0213).
            raise DimseFailure(
                codes.RESOURCE_LIMITATION, "too many storage commitment requests in progress"
            )
        if self._journal is not None:
            # Durable before it is accepted: a restart from here on still gets it reported.
            self.run(
                self._journal.record(
                    caller.tenant, caller.calling_ae_title, transaction, references
                )
            )
        worker = threading.Thread(
            target=self._commit,
            args=(event.assoc, caller, transaction, references),
            name="storage-commitment",
            daemon=True,
        )
        self._workers.add(worker)
        worker.start()
        return codes.status(codes.SUCCESS)

    def _commit(
        self, assoc: Any, caller: Caller, transaction: str, references: list[Reference]
    ) -> None:
        try:
            try:
                outcome = self.run(self._committer.check(caller.tenant, references))
            except Exception:
                log.exception("storage commitment check failed")
                outcome = Outcome([], [(r, codes.PROCESSING_FAILURE) for r in references])
            try:
                delivery = self._reporter.report(
                    assoc, caller.tenant, caller.calling_ae_title, transaction, outcome
                )
            except Exception:
                log.exception("storage commitment report could not be sent")
                delivery = Delivery.RETRY_LATER
            if delivery is not Delivery.RETRY_LATER and self._journal is not None:
                try:
                    self.run(self._journal.complete(caller.tenant, transaction))
                except Exception as exc:  # it stays pending: recovery reports it again
                    log.warning("storage commitment not marked reported", extra={"error": str(exc)})
        finally:
            self._workers.discard(threading.current_thread())

    def join(self, timeout_s: float) -> None:
        """Wait for reports in progress (shutdown), all within one ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        for worker in list(self._workers):
            worker.join(timeout=max(0.0, deadline - time.monotonic()))

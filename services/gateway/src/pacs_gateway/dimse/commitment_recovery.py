"""Reports for Storage Commitment requests their own process never sent (PS3.4 J.3.3).

A request is recorded in the index before its N-ACTION is answered
(:mod:`pacs_gateway.dimse.commitment`). If the gateway process that took it dies before the
report, or the caller could not be reached, the request stays pending there. One process per
gateway pod claims such requests every ``interval_s`` (a lease, so pods never report the same
one at once), checks them again and sends the report on a new association to the caller's
registered destination, as PS3.4 J.3.3 allows when the requesting association is gone.

Only requests older than ``older_than_s`` are claimed: the commitment wait plus the query
deadline and a margin, so a process still working on its request is left to finish it.
Requests still unreported after ``give_up_after_s`` are forgotten with a warning: a modality
that has waited that long has long since asked again or given up (its own timeout).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from pacs.query.v1 import query_service_pb2 as query_pb
from pacs_common.clients.query import QueryClient
from pacs_common.periodic import PeriodicTask

from pacs_gateway.dimse.commitment import Committer, Delivery, Reference, Reporter

log = logging.getLogger(__name__)


@dataclass
class CommitmentRecovery:
    """Claims, checks and reports the requests left pending (see the module docstring)."""

    query: QueryClient
    committer: Committer
    reporter: Reporter
    interval_s: float
    older_than_s: float
    lease_s: float = 120.0
    give_up_after_s: float = 24 * 3600.0
    _loop: PeriodicTask | None = None

    def start(self) -> None:
        """Start the loop in the running event loop (the gateway's io loop)."""
        if self._loop is None:
            self._loop = PeriodicTask(
                "commitment-recovery", self.recover_once, self.interval_s, log
            )
        self._loop.start()

    async def stop(self) -> None:
        if self._loop is not None:
            await self._loop.stop()

    async def recover_once(self) -> int:
        """One pass; returns how many reports were sent."""
        claimed = await self.query.claim_pending_commitments(self.older_than_s, self.lease_s)
        sent = 0
        for request in claimed:
            if await self._settle(request):
                sent += 1
        return sent

    async def _settle(self, request: query_pb.CommitmentRequest) -> bool:
        references = [Reference(r.sop_class_uid, r.sop_instance_uid) for r in request.references]
        if self._age_s(request) > self.give_up_after_s:
            log.warning(
                "storage commitment report abandoned after %.0f h",
                self.give_up_after_s / 3600,
                extra={"transaction_uid": request.transaction_uid},
            )
            await self.query.complete_commitment(request.tenant, request.transaction_uid)
            return False
        outcome = await self.committer.check(request.tenant, references)
        delivery = await asyncio.to_thread(
            self.reporter.report,
            None,
            request.tenant,
            request.calling_ae_title,
            request.transaction_uid,
            outcome,
        )
        if delivery is Delivery.RETRY_LATER:
            return False  # the lease expires and a later pass tries again
        await self.query.complete_commitment(request.tenant, request.transaction_uid)
        return delivery is Delivery.SENT

    @staticmethod
    def _age_s(request: query_pb.CommitmentRequest) -> float:
        try:
            requested = datetime.fromisoformat(request.requested_time)
        except ValueError:
            return 0.0
        return (datetime.now(UTC) - requested).total_seconds()

"""Storage Commitment requests kept until their report is sent (PS3.4 J.3.2, J.3.3).

The gateway answers a Storage Commitment N-ACTION at once and sends the result later as an
N-EVENT-REPORT. Between the two, the request exists only in the gateway process that took it;
a restart there would lose it and the modality would wait for a report that never comes (it
then keeps its copies, or asks again only after its own, often long, timeout). So the gateway
records the request here before it answers the N-ACTION, completes it once the report is sent,
and any gateway process claims those left behind by a process that died.

A claim is a lease: a request is handed to one claimant for ``lease_s`` and only then, if still
not completed, to another. Claims are taken by a compare-and-set on ``leased_until`` (an UPDATE
that matches only the value read), so two gateway pods polling at once never both get it, on
SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import json
import time

from pacs.query.v1 import query_service_pb2 as pb
from pacs_common.errors import InvalidArgumentError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from pacs_indexer.schema import PendingCommitment

CLAIM_LIMIT = 100
"""Requests handed out per claim when the caller asks for no limit."""


def record(session: Session, tenant: str, request: pb.CommitmentRequest) -> None:
    """Keep ``request`` until completed; the same transaction again replaces it.

    Raises:
        InvalidArgumentError: no Transaction UID or no references (PS3.4 J.3.2.1.1).
    """
    if not request.transaction_uid or not request.references:
        raise InvalidArgumentError("a commitment request needs a Transaction UID and references")
    references = [[r.sop_class_uid, r.sop_instance_uid] for r in request.references]
    row = session.get(PendingCommitment, (tenant, request.transaction_uid))
    if row is None:
        row = PendingCommitment(tenant=tenant, transaction_uid=request.transaction_uid)
        session.add(row)
    row.calling_ae_title = request.calling_ae_title
    row.references = json.dumps(references)
    row.requested_time = request.requested_time
    row.requested_at = time.time()
    row.leased_until = 0.0


def complete(session: Session, tenant: str, transaction_uid: str) -> bool:
    """Forget a request whose report was sent; False when none was pending."""
    result = session.execute(
        delete(PendingCommitment).where(
            PendingCommitment.tenant == tenant,
            PendingCommitment.transaction_uid == transaction_uid,
        )
    )
    return bool(getattr(result, "rowcount", 0))


def claim(
    session: Session, older_than_s: float, lease_s: float, limit: int
) -> list[pb.CommitmentRequest]:
    """Lease to the caller the requests accepted over ``older_than_s`` ago and not leased now."""
    now = time.time()
    candidates = session.scalars(
        select(PendingCommitment)
        .where(
            PendingCommitment.requested_at <= now - older_than_s,
            PendingCommitment.leased_until <= now,
        )
        .order_by(PendingCommitment.requested_at)
        .limit(limit or CLAIM_LIMIT)
    ).all()
    claimed: list[pb.CommitmentRequest] = []
    for row in candidates:
        taken = session.execute(
            update(PendingCommitment)
            .where(
                PendingCommitment.tenant == row.tenant,
                PendingCommitment.transaction_uid == row.transaction_uid,
                PendingCommitment.leased_until == row.leased_until,
            )
            .values(leased_until=now + lease_s)
            .execution_options(synchronize_session=False)
        )
        if getattr(taken, "rowcount", 0) != 1:
            continue  # another claimant was first
        claimed.append(
            pb.CommitmentRequest(
                tenant=row.tenant,
                transaction_uid=row.transaction_uid,
                calling_ae_title=row.calling_ae_title,
                references=[
                    pb.CommitmentReference(sop_class_uid=c, sop_instance_uid=i)
                    for c, i in json.loads(row.references)
                ],
                requested_time=row.requested_time,
            )
        )
    return claimed

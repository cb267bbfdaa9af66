"""Pending Storage Commitment requests (``pacs_indexer.commitments``): kept until completed,
leased to one claimant at a time, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from pacs.query.v1 import query_service_pb2 as pb
from pacs_common.errors import InvalidArgumentError
from pacs_indexer import commitments
from pacs_indexer.database import Database


def _request(transaction: str) -> pb.CommitmentRequest:
    return pb.CommitmentRequest(
        transaction_uid=transaction,
        calling_ae_title="MODALITY",
        references=[pb.CommitmentReference(sop_class_uid="1.2.3", sop_instance_uid="1.2.3.4")],
        requested_time="2026-11-30T19:00:00+00:00",
    )


def _claim(database: Database, tenant: str, lease_s: float = 60) -> list[pb.CommitmentRequest]:
    with database.session() as session:
        claimed = commitments.claim(session, 0, lease_s, 0)
    return [request for request in claimed if request.tenant == tenant]


def test_a_request_is_leased_to_one_claimant_until_completed(database: Database) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    transaction = f"2.25.{uuid.uuid4().int}"
    with database.session() as session:
        commitments.record(session, tenant, _request(transaction))

    claimed = _claim(database, tenant)
    assert [(r.transaction_uid, r.calling_ae_title) for r in claimed] == [(transaction, "MODALITY")]
    assert [r.sop_instance_uid for r in claimed[0].references] == ["1.2.3.4"]
    assert _claim(database, tenant) == []  # leased: nobody else gets it meanwhile

    with database.session() as session:
        assert commitments.complete(session, tenant, transaction)
    with database.session() as session:
        assert not commitments.complete(session, tenant, transaction)  # harmless twice


def test_an_expired_lease_hands_the_request_to_the_next_claimant(database: Database) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    transaction = f"2.25.{uuid.uuid4().int}"
    with database.session() as session:
        commitments.record(session, tenant, _request(transaction))
    assert len(_claim(database, tenant, lease_s=0)) == 1
    assert len(_claim(database, tenant)) == 1
    with database.session() as session:
        commitments.complete(session, tenant, transaction)


def test_a_request_without_references_is_refused(database: Database) -> None:
    with pytest.raises(InvalidArgumentError), database.session() as session:
        commitments.record(session, "t", pb.CommitmentRequest(transaction_uid="1.2"))

"""AuditService through gRPC with bearer tokens from the local hydra, fed by real services:
refused gRPC calls are Security Alerts, QueryService calls are Query records; Query is
tenant-scoped behind the audit-read role; redelivered events are stored once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from pacs.audit.v1 import audit_service_pb2 as pb
from pacs.audit.v1 import audit_service_pb2_grpc as pb_grpc
from pacs.events.v1 import audit_events_pb2 as audit_pb
from pacs.query.v1 import query_service_pb2 as query_pb
from pacs.query.v1 import query_service_pb2_grpc as query_grpc
from pacs_common.audit_events import application_activity
from pacs_common.auth import Role
from pacs_common.events import EventPublisher
from pacs_common.local import free_port
from pacs_common.oauth_client import bearer_interceptors
from pacs_common.settings import KafkaSettings
from pacs_testkit.audit import audit_topic, emitter_settings, start_audit
from pacs_testkit.channels import plain_aio_channel
from pacs_testkit.hydra import Hydra
from pacs_testkit.indexer import start_indexer

pytestmark = pytest.mark.integration

ALERT = audit_pb.AUDIT_EVENT_TYPE_SECURITY_ALERT
QUERY = audit_pb.AUDIT_EVENT_TYPE_QUERY
AUDITOR = [Role.AUDIT_READ, Role.ADMIN]


@pytest.fixture
async def stack(infra_env: dict[str, str], tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    """An audit service and an indexer (no storage events) emitting into its topic."""
    topic = audit_topic()
    audit = await start_audit(tmp_path / "audit", topic, checkpoint_every=2)
    indexer = await start_indexer(
        free_port(), tmp_path / "index.sqlite", consume_events=False, audit=emitter_settings(topic)
    )
    yield audit, indexer
    await indexer.stop()
    await audit.stop()


async def _audit_query(
    port: int, hydra: Hydra, tenant: str, roles: list[str], **filters: Any
) -> list[pb.AuditRecord]:
    interceptors = bearer_interceptors(hydra.client(tenant, roles))
    async with plain_aio_channel(f"127.0.0.1:{port}", interceptors=interceptors) as channel:
        response = await pb_grpc.AuditServiceStub(channel).Query(pb.QueryRequest(**filters))
    return list(response.records)


async def _until(check: Any, within_s: float = 60) -> Any:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        found = await check()
        if found or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.3)


async def test_grpc_refusals_and_queries_are_audited(
    stack: tuple[Any, Any], hydra: Hydra, tenant: str
) -> None:
    audit, indexer = stack
    target = f"127.0.0.1:{indexer.grpc_port}"
    find = query_pb.FindStudiesRequest(query=query_pb.Query(match={"PatientID": "AUD-1"}))
    bad = (("authorization", "Bearer not-a-token"),)
    async with plain_aio_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await query_grpc.QueryServiceStub(channel).FindStudies(find, metadata=bad)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    own = bearer_interceptors(hydra.client(tenant, [Role.QUERY]))
    async with plain_aio_channel(target, interceptors=own) as channel:
        stub = query_grpc.QueryServiceStub(channel)
        await stub.FindStudies(find)
        other = query_pb.FindStudiesRequest(query=query_pb.Query(tenant=f"{tenant}-other"))
        with pytest.raises(grpc.aio.AioRpcError) as cross:
            await stub.FindStudies(other)
    assert cross.value.code() == grpc.StatusCode.PERMISSION_DENIED

    async def alerts() -> list[pb.AuditRecord]:
        found = await _audit_query(audit.grpc_port, hydra, tenant, AUDITOR, event_type=ALERT)
        return found if len(found) >= 2 else []

    found = await _until(alerts)
    reasons = [record.event.outcome_description for record in found]
    assert any("FindStudies" in r and "bearer" not in r.lower() for r in reasons), reasons
    cross_tenant = [r.event for r in found if r.event.tenant == tenant]
    assert cross_tenant, "the cross-tenant attempt names the caller's tenant"
    assert cross_tenant[0].actors[0].token_subject  # who tried

    async def queries() -> list[pb.AuditRecord]:
        return await _audit_query(audit.grpc_port, hydra, tenant, AUDITOR, event_type=QUERY)

    query = (await _until(queries))[0].event
    assert b"AUD-1" in query.query
    assert query.patient_id == "AUD-1"
    assert query.tenant == tenant

    # Another tenant's auditor sees none of it; a caller without audit-read is refused.
    assert (
        await _audit_query(audit.grpc_port, hydra, f"{tenant}-x", AUDITOR, event_type=QUERY) == []
    )
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await _audit_query(audit.grpc_port, hydra, tenant, [Role.QUERY])
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    with pytest.raises(grpc.aio.AioRpcError) as malformed:
        await _audit_query(audit.grpc_port, hydra, tenant, AUDITOR, since="yesterday")
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    interceptors = bearer_interceptors(hydra.client(tenant, AUDITOR))
    async with plain_aio_channel(f"127.0.0.1:{audit.grpc_port}", interceptors=interceptors) as ch:
        verdict = await pb_grpc.AuditServiceStub(ch).Verify(pb.VerifyRequest())
    assert verdict.intact, verdict.problem
    assert verdict.records_checked >= 3


async def test_redelivery_is_stored_once_and_garbage_dead_lettered(stack: tuple[Any, Any]) -> None:
    audit, _ = stack
    event = application_activity("redelivery-test", started=True)
    event.id = "redelivered-1"
    event.event_time = "2026-11-30T12:00:00.000Z"
    publisher = EventPublisher(KafkaSettings(), source="test")
    await publisher.start()
    try:
        topic = audit.settings.topic
        await publisher.publish_many(topic, [("", event), ("", event)])
        await publisher.publish(topic, "", event)
    finally:
        await publisher.stop()

    async def stored() -> list[Any]:
        return [r for r in audit.trail.query(tenants=None) if r.event.id == "redelivered-1"]

    await _until(stored)
    # Then a record that is no AuditEvent (dead-lettered, never stored) and a good one after it.
    marker = application_activity("after", started=True)
    marker.id = "after-1"
    publisher = EventPublisher(KafkaSettings(), source="test")
    await publisher.start()
    try:
        assert publisher._producer is not None
        await publisher._producer.send_and_wait(audit.settings.topic, b"\xff\xff not protobuf")
        await publisher.publish(audit.settings.topic, "", marker)
    finally:
        await publisher.stop()

    async def after() -> list[Any]:
        return [r for r in audit.trail.query(tenants=None) if r.event.id == "after-1"]

    assert await _until(after)
    assert len(await stored()) == 1
    assert audit.consumer.stats.dead_lettered == 1

"""An async client of the audit service's ``AuditService``.

Usage::

    audit = AuditClient(open_channel(target, tls), timeout=60)
    records = await audit.query(audit_pb.QueryRequest(patient_id="X", since="2026-11-30T00:00:00Z"))
    verdict = await audit.verify()

Failures raise the project's errors (:mod:`pacs_common.clients.errors`).
"""

from __future__ import annotations

import grpc
from pacs.audit.v1 import audit_service_pb2 as pb
from pacs.audit.v1 import audit_service_pb2_grpc as pb_grpc

from pacs_common.clients.errors import translated

SERVICE = "audit"


class AuditClient:
    """Typed helpers over the generated stub; one instance per channel, safe to share."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float | None = None) -> None:
        self.stub = pb_grpc.AuditServiceStub(channel)
        self.timeout = timeout

    async def query(self, request: pb.QueryRequest) -> list[pb.AuditRecord]:
        """The records matching ``request``, oldest first."""
        with translated(SERVICE):
            response: pb.QueryResponse = await self.stub.Query(request, timeout=self.timeout)
        return list(response.records)

    async def verify(self) -> pb.VerifyResponse:
        """Walk the chain and its checkpoints."""
        with translated(SERVICE):
            response: pb.VerifyResponse = await self.stub.Verify(
                pb.VerifyRequest(), timeout=self.timeout
            )
        return response

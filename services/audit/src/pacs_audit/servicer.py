"""AuditService: query the trail within the caller's tenant, verify the chain.

Both methods need the ``audit-read`` role. Query answers records of the caller's tenant
(:meth:`pacs_common.auth.Caller.tenant_for`); records that belong to no tenant (a service
starting, an association refused before any tenant was known) are added for callers who also
hold ``admin``. Reading the trail is itself audited (Audit Log Used, PS3.15 A.5.3.2).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from pacs.audit.v1 import audit_service_pb2 as pb
from pacs.audit.v1 import audit_service_pb2_grpc as pb_grpc
from pacs_common import audit_events
from pacs_common.auth import AuthorizationInterceptor, AuthSettings, Role, caller_of
from pacs_common.errors import InvalidArgumentError

from pacs_audit.checkpoints import Checkpointer
from pacs_audit.trail import Trail
from pacs_audit.verify import verify

SERVICE = pb.DESCRIPTOR.services_by_name["AuditService"].full_name
ROLES = {"Query": Role.AUDIT_READ, "Verify": Role.AUDIT_READ}


def authorization(settings: AuthSettings) -> AuthorizationInterceptor:
    """The interceptor that authenticates AuditService callers and checks :data:`ROLES`."""
    return AuthorizationInterceptor(settings, {SERVICE: ROLES})


def _time(value: str, name: str) -> str:
    """An RFC 3339 filter normalised to the stored form (UTC, ``Z``), or ''."""
    if not value:
        return ""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidArgumentError(f"{name} is not an RFC 3339 time") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditServicer(pb_grpc.AuditServiceServicer):
    """The gRPC face of the trail."""

    def __init__(self, trail: Trail, checkpointer: Checkpointer, max_results: int) -> None:
        self.trail = trail
        self.checkpointer = checkpointer
        self.max_results = max_results

    async def Query(  # noqa: N802  (gRPC method names are the proto's)
        self, request: pb.QueryRequest, context: Any
    ) -> pb.QueryResponse:
        caller = caller_of(context)
        tenant = caller.tenant_for(request.tenant)
        tenants = [tenant]
        if caller.trusted_service or Role.ADMIN in caller.roles:
            tenants.append("")
        limit = min(request.limit or self.max_results, self.max_results)
        if request.limit < 0:
            raise InvalidArgumentError("limit must not be negative")
        found = await asyncio.to_thread(
            self.trail.query,
            tenants=tenants,
            patient_id=request.patient_id,
            study_instance_uid=request.study_instance_uid,
            actor=request.actor,
            event_type=int(request.event_type),
            since=_time(request.since, "since"),
            until=_time(request.until, "until"),
            limit=limit,
        )
        audit_events.emit(
            audit_events.audit_log_used(
                "audit", caller.subject, tenant, request.SerializeToString()
            )
        )
        return pb.QueryResponse(
            records=[
                pb.AuditRecord(
                    sequence=r.seq, event=r.event, hash=r.hash.hex(), recorded_time=r.recorded_time
                )
                for r in found
            ]
        )

    async def Verify(  # noqa: N802  (gRPC method names are the proto's)
        self, request: pb.VerifyRequest, context: Any
    ) -> pb.VerifyResponse:
        caller_of(context)  # authenticated with audit-read (the interceptor checked the role)
        verdict = await asyncio.to_thread(verify, self.trail, self.checkpointer.key.public_key())
        return pb.VerifyResponse(
            intact=verdict.intact,
            records_checked=verdict.records_checked,
            checkpoints_checked=verdict.checkpoints_checked,
            first_bad_sequence=verdict.first_bad_sequence,
            problem=verdict.problem,
        )

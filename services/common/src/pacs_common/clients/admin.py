"""An async client of the indexer's ``AdminService``: deletion, legal holds, retention.

Usage::

    admin = AdminClient(open_channel(target, tls, interceptors=bearer_interceptors(creds)))
    await admin.delete(pb.DeleteRequest(study_instance_uid="1.2.3"))
    async for item in admin.run_retention(dry_run=True): ...

Failures raise the project's errors (:mod:`pacs_common.clients.errors`): FailedPreconditionError
while a legal hold covers what is deleted, PermissionDeniedError without the ``admin`` role.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from pacs.admin.v1 import admin_service_pb2 as pb
from pacs.admin.v1 import admin_service_pb2_grpc as pb_grpc

from pacs_common.clients.errors import translated

SERVICE = "indexer"


class AdminClient:
    """Typed helpers over the generated stub; one instance per channel, safe to share."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float | None = None) -> None:
        """Args:
        channel: a channel to the indexer.
        timeout: deadline in seconds of every unary call (None: no deadline).
        """
        self.stub = pb_grpc.AdminServiceStub(channel)
        self.timeout = timeout

    async def delete(self, request: pb.DeleteRequest) -> pb.DeleteResponse:
        """Delete a study, series or instance (every stored version)."""
        with translated(SERVICE):
            response: pb.DeleteResponse = await self.stub.Delete(request, timeout=self.timeout)
        return response

    async def set_hold(self, hold: pb.LegalHold, tenant: str = "") -> pb.SetLegalHoldResponse:
        """Set a legal hold (or update its reason)."""
        with translated(SERVICE):
            response: pb.SetLegalHoldResponse = await self.stub.SetLegalHold(
                pb.SetLegalHoldRequest(tenant=tenant, hold=hold), timeout=self.timeout
            )
        return response

    async def release_hold(self, hold: pb.LegalHold, tenant: str = "") -> bool:
        """Lift a legal hold; False when it was not set."""
        with translated(SERVICE):
            response: pb.ReleaseLegalHoldResponse = await self.stub.ReleaseLegalHold(
                pb.ReleaseLegalHoldRequest(tenant=tenant, hold=hold), timeout=self.timeout
            )
        return response.released

    async def list_holds(self, tenant: str = "") -> list[pb.LegalHold]:
        """The tenant's legal holds, oldest first."""
        with translated(SERVICE):
            response: pb.ListLegalHoldsResponse = await self.stub.ListLegalHolds(
                pb.ListLegalHoldsRequest(tenant=tenant), timeout=self.timeout
            )
        return list(response.holds)

    async def run_retention(
        self, *, dry_run: bool, tenant: str = "", as_of: str = ""
    ) -> AsyncIterator[pb.RunRetentionResponse]:
        """Evaluate the retention rules; yields candidates, deletions, then the summary (no
        deadline: a large run is long)."""
        request = pb.RunRetentionRequest(tenant=tenant, dry_run=dry_run, as_of=as_of)
        with translated(SERVICE):
            async for item in self.stub.RunRetention(request):
                yield item

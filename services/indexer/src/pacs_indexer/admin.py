"""AdminService: deletion, legal holds and retention, served by the indexer.

Every method needs the role ``admin`` (:func:`admin_authorization`; a ``query`` token gets
PERMISSION_DENIED, audited as a Security Alert) and acts on the caller's tenant
(:meth:`pacs_common.auth.Caller.tenant_for`). The work is in :mod:`pacs_indexer.lifecycle`
and :mod:`pacs_indexer.retention`; this module validates, calls and maps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import grpc
from pacs.admin.v1 import admin_service_pb2 as pb
from pacs.admin.v1 import admin_service_pb2_grpc as pb_grpc
from pacs_common.auth import AuthorizationInterceptor, AuthSettings, Role, caller_of
from pacs_common.clients.storage import StorageClient
from pacs_common.errors import UnavailableError

from pacs_indexer import lifecycle, retention
from pacs_indexer.database import Database
from pacs_indexer.retention import RetentionRule

_Context = grpc.aio.ServicerContext[Any, Any]

SERVICE = pb.DESCRIPTOR.services_by_name["AdminService"].full_name
_LEVELS = {pb.HOLD_LEVEL_PATIENT: lifecycle.PATIENT, pb.HOLD_LEVEL_STUDY: lifecycle.STUDY}
_LEVEL_CODES = {name: code for code, name in _LEVELS.items()}


def admin_authorization(settings: AuthSettings) -> AuthorizationInterceptor:
    """The interceptor that lets only ``admin`` callers reach AdminService."""
    methods = pb.DESCRIPTOR.services_by_name["AdminService"].methods_by_name
    return AuthorizationInterceptor(settings, {SERVICE: dict.fromkeys(methods, Role.ADMIN)})


def _hold(message: pb.LegalHold, set_by: str = "") -> lifecycle.Hold:
    return lifecycle.Hold(
        level=_LEVELS.get(message.level, ""),
        subject=message.subject,
        issuer=message.issuer_of_patient_id,
        reason=message.reason,
        set_by=set_by,
    )


def _message(hold: lifecycle.Hold) -> pb.LegalHold:
    return pb.LegalHold(
        level=_LEVEL_CODES.get(hold.level, pb.HOLD_LEVEL_UNSPECIFIED),
        subject=hold.subject,
        issuer_of_patient_id=hold.issuer,
        reason=hold.reason,
        set_time=hold.set_time,
        set_by=hold.set_by,
    )


class AdminServicer(pb_grpc.AdminServiceServicer):
    """Deletes, holds and runs retention for the caller's tenant."""

    def __init__(self, database: Database, rules: dict[str, RetentionRule]) -> None:
        self.database = database
        self.rules = rules
        # Set by the app once it has a channel to storage (and, on SQLite, the writer lock).
        self.storage: StorageClient | None = None
        self.write_lock: threading.Lock | None = None

    def _storage(self) -> StorageClient:
        if self.storage is None:
            raise UnavailableError("the indexer is not connected to storage yet")
        return self.storage

    async def Delete(self, request: pb.DeleteRequest, context: _Context) -> pb.DeleteResponse:  # noqa: N802
        caller = caller_of(context)
        target = lifecycle.Target(
            caller.tenant_for(request.tenant),
            request.study_instance_uid,
            request.series_instance_uid,
            request.sop_instance_uid,
        )
        target.check()
        outcome = await lifecycle.delete(
            self.database,
            self._storage(),
            target,
            caller=caller,
            reason=request.reason,
            write_lock=self.write_lock,
        )
        return pb.DeleteResponse(
            instances_deleted=outcome.instances, versions_deleted=outcome.versions
        )

    async def SetLegalHold(  # noqa: N802
        self, request: pb.SetLegalHoldRequest, context: _Context
    ) -> pb.SetLegalHoldResponse:
        caller = caller_of(context)
        tenant = caller.tenant_for(request.tenant)
        hold = _hold(request.hold, set_by=caller.subject)
        stored, created = await asyncio.to_thread(lifecycle.set_hold, self.database, tenant, hold)
        return pb.SetLegalHoldResponse(hold=_message(stored), created=created)

    async def ReleaseLegalHold(  # noqa: N802
        self, request: pb.ReleaseLegalHoldRequest, context: _Context
    ) -> pb.ReleaseLegalHoldResponse:
        tenant = caller_of(context).tenant_for(request.tenant)
        released = await asyncio.to_thread(
            lifecycle.release_hold, self.database, tenant, _hold(request.hold)
        )
        return pb.ReleaseLegalHoldResponse(released=released)

    async def ListLegalHolds(  # noqa: N802
        self, request: pb.ListLegalHoldsRequest, context: _Context
    ) -> pb.ListLegalHoldsResponse:
        tenant = caller_of(context).tenant_for(request.tenant)
        holds = await asyncio.to_thread(lifecycle.list_holds, self.database, tenant)
        return pb.ListLegalHoldsResponse(holds=[_message(hold) for hold in holds])

    async def RunRetention(  # noqa: N802
        self, request: pb.RunRetentionRequest, context: _Context
    ) -> AsyncIterator[pb.RunRetentionResponse]:
        caller = caller_of(context)
        tenant = caller.tenant_for(request.tenant)
        as_of = retention.parse_as_of(request.as_of)
        async for item in retention.run(
            self.database,
            None if request.dry_run else self._storage(),
            tenant,
            retention.rule_for(self.rules, tenant),
            dry_run=request.dry_run,
            as_of=as_of,
            caller=caller,
            write_lock=self.write_lock,
        ):
            yield item

"""DeidService: validate, call the domain, map the result (``pacs.deid.v1``).

Every call is authenticated by the host's interceptor first (:data:`ROLES`); the caller's
tenant comes from its token and must be a source tenant of the project it names, so a tenant can
only de-identify, and read the pseudonyms of, projects fed by its own data.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from pacs.deid.v1 import deid_service_pb2 as pb
from pacs.deid.v1 import deid_service_pb2_grpc as pb_grpc
from pacs.events.v1 import deid_events_pb2 as events_pb
from pacs_common.auth import AuthorizationInterceptor, AuthSettings, Role, caller_of
from pacs_common.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
)
from pacs_common.events import EventPublisher, now_rfc3339
from pacs_common.metrics import DEID_REIDENTIFICATIONS

from pacs_deid.deidentify import Deidentification, Result
from pacs_deid.operations import TOPIC_DEID, Operations

SERVICE = pb.DESCRIPTOR.services_by_name["DeidService"].full_name
ROLES = {
    "DeidentifyInstance": Role.RETRIEVE,
    "DeidentifyStudies": Role.RETRIEVE,
    "GetOperation": Role.RETRIEVE,
    "Reidentify": Role.ADMIN,
}
"""The role each method needs."""
CHUNK = 1024 * 1024
MAX_STUDIES = 1000


def authorization(settings: AuthSettings) -> AuthorizationInterceptor:
    """The interceptor that authenticates DeidService callers and checks :data:`ROLES`."""
    return AuthorizationInterceptor(settings, {SERVICE: ROLES})


class DeidServicer(pb_grpc.DeidServiceServicer):
    """The gRPC face of :class:`~pacs_deid.deidentify.Deidentification`."""

    def __init__(
        self,
        deid: Deidentification,
        operations: Operations | None,
        publisher: EventPublisher | None,
        max_bytes: int,
    ) -> None:
        self.deid = deid
        self.operations = operations
        self.publisher = publisher
        self.max_bytes = max_bytes

    def _tenant(self, context: Any, project: str) -> str:
        caller = caller_of(context)
        tenant = caller.tenant_for("") if not caller.trusted_service else ""
        settings = self.deid.project(project)
        if tenant and tenant not in settings.source_tenants:
            raise PermissionDeniedError("the caller's tenant is not a source of this project")
        return tenant or settings.source_tenants[0]

    async def DeidentifyInstance(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[pb.DeidentifyInstanceRequest], context: Any
    ) -> AsyncIterator[pb.DeidentifyInstanceResponse]:
        # The whole request is read before it is judged: a server that ends the call while the
        # client is still writing loses its status in transport (the client sees INTERNAL
        # "status lost"), so a refusal would not reach the caller as what it is.
        first = await anext(aiter(request_iterator), None)
        parts: list[bytes] = []
        size = 0
        async for message in request_iterator:
            size += len(message.chunk)
            if size > self.max_bytes:
                raise ResourceExhaustedError(f"instance larger than {self.max_bytes} bytes")
            parts.append(message.chunk)
        if first is None or not first.HasField("header"):
            raise InvalidArgumentError("the first message must be the header")
        head = first.header
        if not head.project:
            raise InvalidArgumentError("project is required")
        self._tenant(context, head.project)
        options = self.deid.options_for(head.project, list(head.options))
        result = await asyncio.to_thread(
            self.deid.deidentify, head.project, options, b"".join(parts)
        )
        yield pb.DeidentifyInstanceResponse(report=report_message(result))
        for start in range(0, len(result.data), CHUNK):
            yield pb.DeidentifyInstanceResponse(chunk=result.data[start : start + CHUNK])

    async def DeidentifyStudies(  # noqa: N802 - gRPC method name
        self, request: pb.DeidentifyStudiesRequest, context: Any
    ) -> pb.DeidentifyStudiesResponse:
        if self.operations is None:
            raise FailedPreconditionError("this instance has no storage connection")
        if not request.project or not request.study_instance_uids:
            raise InvalidArgumentError("project and at least one study are required")
        if len(request.study_instance_uids) > MAX_STUDIES:
            raise InvalidArgumentError(f"at most {MAX_STUDIES} studies per operation")
        tenant = self._tenant(context, request.project)
        options = self.deid.options_for(request.project, list(request.options))
        operation = self.operations.start(
            tenant, request.project, list(request.study_instance_uids), options
        )
        return pb.DeidentifyStudiesResponse(operation=operation)

    async def GetOperation(  # noqa: N802 - gRPC method name
        self, request: pb.GetOperationRequest, context: Any
    ) -> pb.GetOperationResponse:
        if self.operations is None:
            raise FailedPreconditionError("this instance has no storage connection")
        caller = caller_of(context)
        tenant = caller.tenant or ""
        if caller.trusted_service:
            tenant = self.operations.tenant_of(request.name)
        return pb.GetOperationResponse(operation=self.operations.get(tenant, request.name))

    async def Reidentify(  # noqa: N802 - gRPC method name
        self, request: pb.ReidentifyRequest, context: Any
    ) -> pb.ReidentifyResponse:
        if not request.project or not request.pseudonym:
            raise InvalidArgumentError("project and pseudonym are required")
        tenant = self._tenant(context, request.project)
        project = self.deid.project(request.project)
        if self.deid.reid_map is None or not project.reidentification_map:
            raise FailedPreconditionError("this project keeps no re-identification map")
        if self.publisher is None:
            raise FailedPreconditionError("re-identification needs the audit event stream")
        original = await asyncio.to_thread(
            self.deid.reid_map.lookup, request.project, request.pseudonym
        )
        # Announced before the answer leaves: a read that cannot be audited is not answered.
        event = events_pb.ReidentificationPerformed(
            project=request.project,
            pseudonym=request.pseudonym,
            requester=caller_of(context).subject,
            tenant=tenant,
            reason=request.reason,
            found=original is not None,
            performed_time=now_rfc3339(),
        )
        await self.publisher.publish(TOPIC_DEID, request.project, event)
        DEID_REIDENTIFICATIONS.labels(str(original is not None).lower()).inc()
        if original is None:
            raise NotFoundError("no such pseudonym in the project's map")
        return pb.ReidentifyResponse(
            kind=original.kind, original=original.value, original_name=original.name
        )


def report_message(result: Result) -> pb.DeidentificationReport:
    """The report of one instance, without any original value."""
    ds = result.dataset
    return pb.DeidentificationReport(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        patient_pseudonym=result.report.patient_pseudonym,
        actions=dict(result.report.actions),
        private_kept=result.report.private_kept,
        private_removed=result.report.private_removed,
        masked=[
            pb.MaskedRegion(
                frame=m.frame,
                x=m.x,
                y=m.y,
                width=m.width,
                height=m.height,
                reason=m.reason,
                confidence=m.confidence,
            )
            for m in result.masked
        ],
        method_codes=result.method_codes,
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        notes=result.notes,
    )

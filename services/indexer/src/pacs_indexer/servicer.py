"""QueryService: validate the request, run the query on a worker thread, map the result.

Every call is authenticated first (:func:`authorization`): finds and metadata need the role
``query``, reindex and index checks ``admin``. The tenant a call reads is the caller's
(:meth:`pacs_common.auth.Caller.tenant_for`): a request naming another tenant is refused before
anything is read, an empty one means the caller's own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from pacs.events.v1 import workflow_events_pb2 as workflow_pb
from pacs.query.v1 import query_service_pb2 as pb
from pacs.query.v1 import query_service_pb2_grpc as pb_grpc
from pacs_common import audit_events
from pacs_common.auth import AuthorizationInterceptor, AuthSettings, Role, caller_of
from pacs_common.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    PermissionDeniedError,
)
from pacs_common.events import TOPIC_WORKFLOW, EventPublisher
from pacs_common.metrics import INDEX_QUERY_DURATION

from pacs_indexer import commitments, mpps
from pacs_indexer.attributes import Level
from pacs_indexer.database import Database
from pacs_indexer.extra_attributes import ExtraAttributes
from pacs_indexer.query import (
    FindQuery,
    FindResult,
    find,
    instance_metadata,
    study_metadata_page,
)
from pacs_indexer.reconcile import Reconciler, check, reindex
from pacs_indexer.records import now_rfc3339
from pacs_indexer.report_index import find_measurements, report_text
from pacs_indexer.worklist import find_worklist

_Context = grpc.aio.ServicerContext[Any, Any]

SERVICE = pb.DESCRIPTOR.services_by_name["QueryService"].full_name
ROLES = {
    "FindStudies": Role.QUERY,
    "FindSeries": Role.QUERY,
    "FindInstances": Role.QUERY,
    "GetInstanceMetadata": Role.QUERY,
    "GetStudyMetadata": Role.QUERY,
    "Reindex": Role.ADMIN,
    "CheckIndex": Role.ADMIN,
    "FindWorklist": Role.QUERY,
    "FindMeasurements": Role.QUERY,
    "GetReportText": Role.QUERY,
    "RecordPerformedProcedureStep": Role.INGEST,
    "RecordCommitmentRequest": Role.INGEST,
    "CompleteCommitmentRequest": Role.INGEST,
    "ClaimPendingCommitmentRequests": Role.INGEST,
}
"""The role each QueryService method needs (a method missing here needs ``admin``)."""


def authorization(settings: AuthSettings) -> AuthorizationInterceptor:
    """The interceptor that authenticates QueryService callers and checks :data:`ROLES`."""
    return AuthorizationInterceptor(settings, {SERVICE: ROLES})


METADATA_PAGE = 200
"""Headers per GetStudyMetadata message: a few MiB at most, under the 16 MiB message cap."""


class QueryServicer(pb_grpc.QueryServiceServicer):
    """Answers DICOM queries from the index (PS3.4 C.4.1, PS3.18 10.6)."""

    def __init__(
        self,
        database: Database,
        max_results: int,
        fuzzy_default: bool,
        extras: ExtraAttributes | None = None,
    ) -> None:
        self.database = database
        self.extras = extras
        self.max_results = max_results
        self.fuzzy_default = fuzzy_default
        # Set by the app once storage and the event path exist (only when consuming events).
        self.reconciler: Reconciler | None = None
        # Set by the app when it publishes events (ProcedureStepUpdated after an MPPS).
        self.publisher: EventPublisher | None = None

    async def Reindex(  # noqa: N802  (gRPC method names are the proto's)
        self, request: pb.ReindexRequest, context: _Context
    ) -> AsyncIterator[pb.ReindexResponse]:
        tenant = caller_of(context).tenant_for(request.tenant)
        reconciler = self._reconciler()
        async for progress in reindex(reconciler.handler, reconciler.storage, tenant):
            yield pb.ReindexResponse(
                total=progress.total, processed=progress.processed, failed=progress.failed
            )

    async def CheckIndex(  # noqa: N802  (gRPC method names are the proto's)
        self, request: pb.CheckIndexRequest, context: _Context
    ) -> pb.CheckIndexResponse:
        tenant = caller_of(context).tenant_for(request.tenant)
        reconciler = self._reconciler()
        result = await check(reconciler.database, reconciler.storage, tenant)
        listed = request.max_listed or 100
        return pb.CheckIndexResponse(
            stored_count=result.stored_count,
            indexed_count=result.indexed_count,
            not_indexed_count=len(result.not_indexed),
            not_in_storage_count=len(result.not_in_storage),
            not_indexed=result.not_indexed[:listed],
            not_in_storage=result.not_in_storage[:listed],
        )

    def _reconciler(self) -> Reconciler:
        if self.reconciler is None:
            raise FailedPreconditionError(
                "this indexer does not reach storage (PACS_INDEXER_CONSUME_EVENTS=false)"
            )
        return self.reconciler

    async def FindStudies(  # noqa: N802  (gRPC method names are the proto's)
        self, request: pb.FindStudiesRequest, context: _Context
    ) -> pb.FindStudiesResponse:
        result = await self._find(request.query, Level.STUDY, context)
        return pb.FindStudiesResponse(datasets=_texts(result), total_count=result.total_count)

    async def FindSeries(  # noqa: N802  (gRPC method names are the proto's)
        self, request: pb.FindSeriesRequest, context: _Context
    ) -> pb.FindSeriesResponse:
        result = await self._find(request.query, Level.SERIES, context)
        return pb.FindSeriesResponse(datasets=_texts(result), total_count=result.total_count)

    async def FindInstances(  # noqa: N802  (gRPC method names are the proto's)
        self, request: pb.FindInstancesRequest, context: _Context
    ) -> pb.FindInstancesResponse:
        result = await self._find(request.query, Level.IMAGE, context)
        return pb.FindInstancesResponse(datasets=_texts(result), total_count=result.total_count)

    async def GetInstanceMetadata(  # noqa: N802  (gRPC method names are the proto's)
        self, request: pb.GetInstanceMetadataRequest, context: _Context
    ) -> pb.GetInstanceMetadataResponse:
        dataset = await asyncio.to_thread(
            self._metadata,
            caller_of(context).tenant_for(request.tenant),
            request.study_instance_uid,
            request.series_instance_uid,
            request.sop_instance_uid,
        )
        return pb.GetInstanceMetadataResponse(dataset=dataset)

    async def GetStudyMetadata(  # noqa: N802  (gRPC method names are the proto's)
        self, request: pb.GetStudyMetadataRequest, context: _Context
    ) -> AsyncIterator[pb.GetStudyMetadataResponse]:
        tenant = caller_of(context).tenant_for(request.tenant)
        offset = 0
        while True:
            page = await asyncio.to_thread(
                self._metadata_page,
                tenant,
                request.study_instance_uid,
                request.series_instance_uid,
                offset,
            )
            if page:
                yield pb.GetStudyMetadataResponse(datasets=page)
            if len(page) < METADATA_PAGE:
                return
            offset += len(page)

    def _metadata_page(self, tenant: str, study: str, series: str, offset: int) -> list[str]:
        with self.database.session() as session:
            return study_metadata_page(
                session, tenant, study, series, offset=offset, limit=METADATA_PAGE
            )

    async def _find(self, query: pb.Query, level: Level, context: _Context) -> FindResult:
        caller = caller_of(context)
        tenant = caller.tenant_for(query.tenant)
        audit_events.emit(
            audit_events.caller_query(
                caller,
                SERVICE,
                level.name,
                tenant,
                query.SerializeToString(),
                patient_id=query.match.get("PatientID", ""),
            )
        )
        spec = FindQuery(
            tenant=tenant,
            level=level,
            match=dict(query.match),
            return_keys=list(query.return_keys),
            limit=query.limit,
            offset=query.offset,
            fuzzy=query.fuzzy_matching or self.fuzzy_default,
            combined_datetime=query.combined_datetime_matching,
            extras=self.extras,
        )
        with INDEX_QUERY_DURATION.labels(level=level.name).time():
            return await asyncio.to_thread(self._run, spec)

    def _run(self, spec: FindQuery) -> FindResult:
        with self.database.session() as session:
            return find(session, spec, self.max_results)

    def _metadata(self, tenant: str, study: str, series: str, sop: str) -> str:
        with self.database.session() as session:
            return instance_metadata(session, tenant, study, series, sop)

    async def FindWorklist(  # noqa: N802  (gRPC method names are the proto's)
        self, request: pb.FindWorklistRequest, context: _Context
    ) -> pb.FindWorklistResponse:
        query = request.query
        tenant = caller_of(context).tenant_for(query.tenant)
        limit = min(query.limit or self.max_results, self.max_results)

        def run() -> pb.FindWorklistResponse:
            with self.database.session() as session:
                result = find_worklist(
                    session,
                    tenant,
                    dict(query.match),
                    limit=limit,
                    offset=max(0, query.offset),
                    fuzzy=query.fuzzy_matching or self.fuzzy_default,
                    include_inactive=request.include_inactive,
                )
            return pb.FindWorklistResponse(
                datasets=[json.dumps(d, separators=(",", ":")) for d in result.datasets],
                total_count=result.total_count,
            )

        with INDEX_QUERY_DURATION.labels(level="WORKLIST").time():
            return await asyncio.to_thread(run)

    async def RecordPerformedProcedureStep(  # noqa: N802  (gRPC method names are the proto's)
        self, request: pb.RecordPerformedProcedureStepRequest, context: _Context
    ) -> pb.RecordPerformedProcedureStepResponse:
        tenant = caller_of(context).tenant_for(request.tenant)
        if not request.sop_instance_uid:
            raise InvalidArgumentError("the MPPS SOP Instance UID is required")
        operation = {
            pb.PERFORMED_STEP_OPERATION_CREATE: mpps.create,
            pb.PERFORMED_STEP_OPERATION_SET: mpps.update,
        }.get(request.operation)
        if operation is None:
            raise InvalidArgumentError("operation must be CREATE or SET")

        def run() -> mpps.Recorded:
            with self.database.session() as session:
                return operation(session, tenant, request.sop_instance_uid, request.dataset)

        recorded = await asyncio.to_thread(run)
        if self.publisher is not None:
            event = workflow_pb.ProcedureStepUpdated(
                tenant=tenant,
                performed_procedure_step_uid=request.sop_instance_uid,
                status=recorded.status,
                accession_number=recorded.accession_number,
                step_id=recorded.step_id,
                study_instance_uid=recorded.study_instance_uid,
                instances=recorded.instances,
                recorded_time=now_rfc3339(),
                all_instances_stored=recorded.all_instances_stored,
            )
            await self.publisher.publish(TOPIC_WORKFLOW, f"{tenant}/mpps", event)
        return pb.RecordPerformedProcedureStepResponse(
            status=recorded.status, scheduled_steps_updated=recorded.steps_updated
        )

    async def RecordCommitmentRequest(  # noqa: N802  (gRPC method names are the proto's)
        self, request: pb.RecordCommitmentRequestRequest, context: _Context
    ) -> pb.RecordCommitmentRequestResponse:
        tenant = caller_of(context).tenant_for(request.request.tenant)

        def run() -> None:
            with self.database.session() as session:
                commitments.record(session, tenant, request.request)

        await asyncio.to_thread(run)
        return pb.RecordCommitmentRequestResponse()

    async def CompleteCommitmentRequest(  # noqa: N802  (gRPC method names are the proto's)
        self, request: pb.CompleteCommitmentRequestRequest, context: _Context
    ) -> pb.CompleteCommitmentRequestResponse:
        tenant = caller_of(context).tenant_for(request.tenant)

        def run() -> bool:
            with self.database.session() as session:
                return commitments.complete(session, tenant, request.transaction_uid)

        return pb.CompleteCommitmentRequestResponse(completed=await asyncio.to_thread(run))

    async def ClaimPendingCommitmentRequests(  # noqa: N802  (gRPC method names are the proto's)
        self, request: pb.ClaimPendingCommitmentRequestsRequest, context: _Context
    ) -> pb.ClaimPendingCommitmentRequestsResponse:
        # Claims span tenants and whoever claims must send the reports: the gateway only.
        if not caller_of(context).trusted_service:
            raise PermissionDeniedError("only a trusted service claims commitment requests")
        if request.older_than_seconds < 0 or request.lease_seconds <= 0:
            raise InvalidArgumentError("older_than_seconds >= 0 and lease_seconds > 0 required")

        def run() -> list[pb.CommitmentRequest]:
            with self.database.session() as session:
                return commitments.claim(
                    session, request.older_than_seconds, request.lease_seconds, request.limit
                )

        claimed = await asyncio.to_thread(run)
        return pb.ClaimPendingCommitmentRequestsResponse(requests=claimed)

    async def FindMeasurements(  # noqa: N802  (gRPC method names are the proto's)
        self, request: pb.FindMeasurementsRequest, context: _Context
    ) -> pb.FindMeasurementsResponse:
        tenant = caller_of(context).tenant_for(request.tenant)
        limit = min(request.limit or self.max_results, self.max_results)

        def run() -> list[pb.MeasurementRecord]:
            with self.database.session() as session:
                return find_measurements(session, tenant, request, limit)

        return pb.FindMeasurementsResponse(measurements=await asyncio.to_thread(run))

    async def GetReportText(  # noqa: N802  (gRPC method names are the proto's)
        self, request: pb.GetReportTextRequest, context: _Context
    ) -> pb.GetReportTextResponse:
        tenant = caller_of(context).tenant_for(request.tenant)

        def run() -> str:
            with self.database.session() as session:
                return report_text(session, tenant, request.sop_instance_uid)

        return pb.GetReportTextResponse(text=await asyncio.to_thread(run))


def _texts(result: FindResult) -> list[str]:
    return [json.dumps(dataset, separators=(",", ":")) for dataset in result.datasets]

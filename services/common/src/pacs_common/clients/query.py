"""An async client of the indexer's ``QueryService``.

Usage::

    query = QueryClient(open_channel(target, tls), timeout=30)
    page = await query.find_studies(query_pb.Query(tenant="t1", match={"PatientID": "X"}))
    async for progress in query.reindex("t1"): ...

Failures raise the project's errors (:mod:`pacs_common.clients.errors`): UnavailableError when
the indexer cannot be reached, InvalidArgumentError for a query it cannot evaluate, and so on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from pacs.query.v1 import query_service_pb2 as pb
from pacs.query.v1 import query_service_pb2_grpc as pb_grpc

from pacs_common.clients.errors import translated

SERVICE = "indexer"


class QueryClient:
    """Typed helpers over the generated stub; one instance per channel, safe to share."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float | None = None) -> None:
        """Args:
        channel: a channel to QueryService (see :func:`pacs_common.grpc_client.open_channel`).
        timeout: deadline in seconds of every unary call (None: no deadline).
        """
        self.stub = pb_grpc.QueryServiceStub(channel)
        self.timeout = timeout

    async def find_studies(self, query: pb.Query) -> pb.FindStudiesResponse:
        """One page of matching studies (DICOM JSON) and the total number of matches."""
        with translated(SERVICE):
            response: pb.FindStudiesResponse = await self.stub.FindStudies(
                pb.FindStudiesRequest(query=query), timeout=self.timeout
            )
        return response

    async def find_series(self, query: pb.Query) -> pb.FindSeriesResponse:
        """One page of matching series and the total number of matches."""
        with translated(SERVICE):
            response: pb.FindSeriesResponse = await self.stub.FindSeries(
                pb.FindSeriesRequest(query=query), timeout=self.timeout
            )
        return response

    async def find_instances(self, query: pb.Query) -> pb.FindInstancesResponse:
        """One page of matching instances and the total number of matches."""
        with translated(SERVICE):
            response: pb.FindInstancesResponse = await self.stub.FindInstances(
                pb.FindInstancesRequest(query=query), timeout=self.timeout
            )
        return response

    async def instance_metadata(
        self, tenant: str, study_uid: str, series_uid: str, sop_instance_uid: str
    ) -> str:
        """The DICOM JSON metadata of one instance."""
        request = pb.GetInstanceMetadataRequest(
            tenant=tenant,
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            sop_instance_uid=sop_instance_uid,
        )
        with translated(SERVICE):
            response: pb.GetInstanceMetadataResponse = await self.stub.GetInstanceMetadata(
                request, timeout=self.timeout
            )
        return response.dataset

    async def study_metadata(
        self, tenant: str, study_uid: str, series_uid: str = ""
    ) -> AsyncIterator[str]:
        """The DICOM JSON metadata of every instance of a study (or one of its series)."""
        request = pb.GetStudyMetadataRequest(
            tenant=tenant, study_instance_uid=study_uid, series_instance_uid=series_uid
        )
        with translated(SERVICE):
            async for message in self.stub.GetStudyMetadata(request, timeout=self.timeout):
                for dataset in message.datasets:
                    yield dataset

    async def reindex(self, tenant: str) -> AsyncIterator[pb.ReindexResponse]:
        """Rebuild a tenant's index from storage; yields progress (no deadline: it is long)."""
        with translated(SERVICE):
            async for progress in self.stub.Reindex(pb.ReindexRequest(tenant=tenant)):
                yield progress

    async def check_index(self, tenant: str, max_listed: int = 20) -> pb.CheckIndexResponse:
        """Compare a tenant's index with what storage holds."""
        with translated(SERVICE):
            response: pb.CheckIndexResponse = await self.stub.CheckIndex(
                pb.CheckIndexRequest(tenant=tenant, max_listed=max_listed)
            )
        return response

    async def record_commitment(self, request: pb.CommitmentRequest) -> None:
        """Keep a Storage Commitment request until its report is sent (durable on return)."""
        with translated(SERVICE):
            await self.stub.RecordCommitmentRequest(
                pb.RecordCommitmentRequestRequest(request=request), timeout=self.timeout
            )

    async def complete_commitment(self, tenant: str, transaction_uid: str) -> bool:
        """Forget a request whose report was sent; False when it was no longer pending."""
        with translated(SERVICE):
            response: pb.CompleteCommitmentRequestResponse = (
                await self.stub.CompleteCommitmentRequest(
                    pb.CompleteCommitmentRequestRequest(
                        tenant=tenant, transaction_uid=transaction_uid
                    ),
                    timeout=self.timeout,
                )
            )
        return response.completed

    async def claim_pending_commitments(
        self, older_than_s: float, lease_s: float, limit: int = 0
    ) -> list[pb.CommitmentRequest]:
        """Lease the requests whose own process never reported them (trusted services only)."""
        with translated(SERVICE):
            response: pb.ClaimPendingCommitmentRequestsResponse = (
                await self.stub.ClaimPendingCommitmentRequests(
                    pb.ClaimPendingCommitmentRequestsRequest(
                        older_than_seconds=older_than_s, lease_seconds=lease_s, limit=limit
                    ),
                    timeout=self.timeout,
                )
            )
        return list(response.requests)

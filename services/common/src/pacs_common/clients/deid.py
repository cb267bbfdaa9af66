"""A small async client of DeidService (``pacs.deid.v1``).

Usage::

    from pacs_common.grpc_client import open_channel
    from pacs_common.clients.deid import DeidClient

    deid = DeidClient(open_channel("127.0.0.1:50055", tls, interceptors=bearer))
    report, data = await deid.deidentify_instance("research", part10_bytes, ["retain_uids"])
    operation = await deid.deidentify_studies("research", [study_uid])
    operation = await deid.get_operation(operation.name)
    original = await deid.reidentify("research", "ANON0123456789ABCDEF", reason="IRB 42")

Failures raise the project's errors, translated once by :mod:`pacs_common.clients.errors`:
InvalidArgumentError (not DICOM, unknown option), FailedPreconditionError (burned-in
annotation without clean_pixel_data), NotFoundError (unknown project or operation),
PermissionDeniedError (the token's tenant is not a source of the project).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc
from pacs.deid.v1 import deid_service_pb2 as pb
from pacs.deid.v1 import deid_service_pb2_grpc as pb_grpc

from pacs_common.clients.errors import translated

SERVICE = "deid"
CHUNK = 1024 * 1024


class DeidClient:
    """Typed helpers over the generated stub; one instance per channel, safe to share."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float | None = None) -> None:
        self.stub = pb_grpc.DeidServiceStub(channel)
        self.timeout = timeout

    async def deidentify_instance(
        self, project: str, data: bytes, options: Sequence[str] = ()
    ) -> tuple[pb.DeidentificationReport, bytes]:
        """De-identify one Part 10 instance; returns the report and the new bytes."""

        async def requests() -> AsyncIterator[pb.DeidentifyInstanceRequest]:
            yield pb.DeidentifyInstanceRequest(
                header=pb.DeidentifyHeader(
                    project=project, options=list(options), size_hint=len(data)
                )
            )
            for start in range(0, len(data), CHUNK):
                yield pb.DeidentifyInstanceRequest(chunk=data[start : start + CHUNK])

        report = pb.DeidentificationReport()
        parts: list[bytes] = []
        with translated(SERVICE):
            async for message in self.stub.DeidentifyInstance(requests(), timeout=self.timeout):
                if message.HasField("report"):
                    report = message.report
                else:
                    parts.append(message.chunk)
        return report, b"".join(parts)

    async def deidentify_studies(
        self, project: str, study_instance_uids: Sequence[str], options: Sequence[str] = ()
    ) -> pb.Operation:
        """Start copying stored studies, de-identified, into the project's target tenant."""
        request = pb.DeidentifyStudiesRequest(
            project=project, study_instance_uids=list(study_instance_uids), options=list(options)
        )
        with translated(SERVICE):
            response: pb.DeidentifyStudiesResponse = await self.stub.DeidentifyStudies(
                request, timeout=self.timeout
            )
        return response.operation

    async def get_operation(self, name: str) -> pb.Operation:
        """The state and progress of an operation."""
        with translated(SERVICE):
            response: pb.GetOperationResponse = await self.stub.GetOperation(
                pb.GetOperationRequest(name=name), timeout=self.timeout
            )
        return response.operation

    async def reidentify(
        self, project: str, pseudonym: str, *, reason: str = ""
    ) -> pb.ReidentifyResponse:
        """The original behind a pseudonym (audited by the service)."""
        with translated(SERVICE):
            response: pb.ReidentifyResponse = await self.stub.Reidentify(
                pb.ReidentifyRequest(project=project, pseudonym=pseudonym, reason=reason),
                timeout=self.timeout,
            )
        return response

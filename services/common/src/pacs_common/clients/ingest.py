"""An async client of the gateway's ``IngestService`` (Part 10 files without DIMSE).

Usage::

    ingest = IngestClient(open_channel(target, tls), timeout=60)
    await ingest.echo()
    results = await ingest.store("tenant", [("a.dcm", part10_bytes), ...])

Failures of the call raise the project's errors (:mod:`pacs_common.clients.errors`); each file's
own outcome (stored, already present, refused, unavailable) is in its result.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import grpc
from pacs.ingest.v1 import ingest_service_pb2 as pb
from pacs.ingest.v1 import ingest_service_pb2_grpc as pb_grpc

from pacs_common.clients.errors import translated

SERVICE = "gateway"
DEFAULT_CHUNK_SIZE = 1024 * 1024


class IngestClient:
    """Typed helpers over the generated stub; one instance per channel, safe to share."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        timeout: float | None = None,
    ) -> None:
        """Args:
        channel: a channel to IngestService (see :func:`pacs_common.grpc_client.open_channel`).
        chunk_size: bytes per message of a file.
        timeout: deadline in seconds of every call (None: no deadline).
        """
        self.stub = pb_grpc.IngestServiceStub(channel)
        self.chunk_size = chunk_size
        self.timeout = timeout

    async def echo(self) -> str:
        """Check the gateway and its storage path; returns the gateway's AE title."""
        with translated(SERVICE):
            response: pb.EchoResponse = await self.stub.Echo(pb.EchoRequest(), timeout=self.timeout)
        return response.ae_title

    async def store(
        self, tenant: str, files: Iterable[tuple[str, bytes]]
    ) -> list[pb.StoreFileResult]:
        """Send Part 10 files (each ``(client_file_id, bytes)``) in one stream; one result each."""
        with translated(SERVICE):
            response: pb.StoreResponse = await self.stub.Store(
                self._requests(tenant, files), timeout=self.timeout
            )
        return list(response.results)

    async def _requests(
        self, tenant: str, files: Iterable[tuple[str, bytes]]
    ) -> AsyncIterator[pb.StoreRequest]:
        for file_id, data in files:
            yield pb.StoreRequest(header=pb.StoreFileHeader(tenant=tenant, client_file_id=file_id))
            view = memoryview(data)
            for start in range(0, len(data), self.chunk_size):
                yield pb.StoreRequest(chunk=bytes(view[start : start + self.chunk_size]))

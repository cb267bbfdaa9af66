"""A small async client of StorageService for the other services.

Usage::

    from pacs_common.grpc_client import open_channel
    from pacs_common.clients.storage import StorageClient

    storage = StorageClient(open_channel("127.0.0.1:50051", settings.grpc_tls))  # mutual TLS
    response = await storage.put(ref, part10_bytes)      # or an async iterator of chunks
    data = await storage.get(ref)                          # whole object, SHA-256 verified
    header = await storage.get(ref, offset=0, length=65536)
    async for chunk in storage.get_stream(ref): ...
    info = await storage.head(ref)

Failures raise the project's errors, translated once by :mod:`pacs_common.clients.errors`:
:class:`~pacs_common.errors.UnavailableError` when S3 or Kafka is down (or the service cannot be
reached), :class:`~pacs_common.errors.NotFoundError`,
:class:`~pacs_common.errors.InvalidArgumentError`, :class:`~pacs_common.errors.DataLossError`
when stored bytes are corrupt; each carries the service's status code as ``code``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import grpc
from pacs.storage.v1 import storage_service_pb2 as pb
from pacs.storage.v1 import storage_service_pb2_grpc as pb_grpc
from pacs.type.v1 import instance_pb2

from pacs_common.clients.errors import translated

SERVICE = "storage"
DEFAULT_CHUNK_SIZE = 1024 * 1024


class StorageClient:
    """Typed helpers over the generated stub; one instance per channel, safe to share."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        timeout: float | None = None,
    ) -> None:
        """Args:
        channel: a channel to StorageService (see :func:`pacs_common.grpc_client.open_channel`).
        chunk_size: bytes per Put message when ``put`` is given ``bytes``.
        timeout: deadline in seconds applied to every call (None: no deadline).
        """
        self.stub = pb_grpc.StorageServiceStub(channel)
        self.chunk_size = chunk_size
        self.timeout = timeout

    async def put(
        self,
        instance: instance_pb2.InstanceRef,
        data: bytes | AsyncIterator[bytes],
        *,
        size_hint: int = 0,
        expected_sha256: str = "",
        sending_ae_title: str = "",
        refuse_other_bytes: bool = False,
    ) -> pb.PutResponse:
        """Store one Part 10 object; returns once it is durable and announced.

        With ``refuse_other_bytes`` an instance stored with other bytes is left as it is and
        AlreadyExistsError raised (else those bytes are kept as a version).

        With ``bytes`` the size and SHA-256 are sent along (the service then verifies the
        whole stream end to end and can upload large objects straight to their final key).
        """
        if isinstance(data, bytes | bytearray | memoryview):
            payload = bytes(data)
            header = pb.PutHeader(
                instance=instance,
                size_hint=len(payload),
                expected_sha256=expected_sha256 or hashlib.sha256(payload).hexdigest(),
                sending_ae_title=sending_ae_title,
                refuse_other_bytes=refuse_other_bytes,
            )
            requests = self._requests(header, _slices(payload, self.chunk_size))
        else:
            header = pb.PutHeader(
                instance=instance,
                size_hint=size_hint,
                expected_sha256=expected_sha256,
                sending_ae_title=sending_ae_title,
                refuse_other_bytes=refuse_other_bytes,
            )
            requests = self._requests(header, data)
        with translated(SERVICE):
            response: pb.PutResponse = await self.stub.Put(requests, timeout=self.timeout)
        return response

    @staticmethod
    async def _requests(
        header: pb.PutHeader, chunks: AsyncIterator[bytes]
    ) -> AsyncIterator[pb.PutRequest]:
        yield pb.PutRequest(header=header)
        async for chunk in chunks:
            if chunk:
                yield pb.PutRequest(chunk=chunk)

    async def open(
        self,
        instance: instance_pb2.InstanceRef,
        offset: int = 0,
        length: int = 0,
        *,
        version_id: str = "",
    ) -> tuple[instance_pb2.ObjectInfo, AsyncIterator[bytes]]:
        """Start reading: the object's description, then its chunks (``length`` 0 = to the
        end). A full read is verified by the service; a mismatch ends the chunks with
        DATA_LOSS before the last one."""
        call = self.stub.Get(
            pb.GetRequest(instance=instance, offset=offset, length=length, version_id=version_id),
            timeout=self.timeout,
        )
        stream = aiter(call)
        with translated(SERVICE):
            first: pb.GetResponse = await anext(stream)

        async def chunks() -> AsyncIterator[bytes]:
            if first.chunk:
                yield first.chunk
            with translated(SERVICE):
                async for message in stream:
                    yield message.chunk

        return first.object, chunks()

    async def get_stream(
        self,
        instance: instance_pb2.InstanceRef,
        offset: int = 0,
        length: int = 0,
        *,
        version_id: str = "",
    ) -> AsyncIterator[bytes]:
        """The object's bytes (or a range) chunk by chunk."""
        _, chunks = await self.open(instance, offset, length, version_id=version_id)
        async for chunk in chunks:
            yield chunk

    async def get(
        self,
        instance: instance_pb2.InstanceRef,
        offset: int = 0,
        length: int = 0,
        *,
        version_id: str = "",
    ) -> bytes:
        """The object's bytes (or a range) in memory."""
        parts = [
            chunk
            async for chunk in self.get_stream(instance, offset, length, version_id=version_id)
        ]
        return b"".join(parts)

    async def head(
        self, instance: instance_pb2.InstanceRef, *, version_id: str = ""
    ) -> instance_pb2.ObjectInfo:
        """Size, SHA-256, version and descriptors of a stored object."""
        with translated(SERVICE):
            response: pb.HeadResponse = await self.stub.Head(
                pb.HeadRequest(instance=instance, version_id=version_id), timeout=self.timeout
            )
        return response.object

    async def delete(
        self, instance: instance_pb2.InstanceRef, *, all_versions: bool = False
    ) -> int:
        """Remove the current object (or every version); returns how many were removed."""
        with translated(SERVICE):
            response: pb.DeleteResponse = await self.stub.Delete(
                pb.DeleteRequest(instance=instance, all_versions=all_versions),
                timeout=self.timeout,
            )
        return response.deleted_versions

    async def list(
        self,
        tenant: str,
        study_instance_uid: str = "",
        series_instance_uid: str = "",
        *,
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListResponse:
        """One page of stored instances under a tenant, study or series."""
        request = pb.ListRequest(
            tenant=tenant,
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid,
            page_size=page_size,
            page_token=page_token,
        )
        with translated(SERVICE):
            response: pb.ListResponse = await self.stub.List(request, timeout=self.timeout)
        return response

    async def list_all(
        self, tenant: str, study_instance_uid: str = "", series_instance_uid: str = ""
    ) -> AsyncIterator[instance_pb2.ObjectInfo]:
        """Every stored instance under a prefix, following the pages."""
        token = ""
        while True:
            page = await self.list(
                tenant, study_instance_uid, series_instance_uid, page_token=token
            )
            for info in page.objects:
                yield info
            token = page.next_page_token
            if not token:
                return

    async def grant_write(self, request: pb.GrantWriteRequest) -> pb.GrantWriteResponse:
        """Signed requests to write one new object straight to S3 (see
        :mod:`pacs_common.clients.direct`, which uses them)."""
        with translated(SERVICE):
            response: pb.GrantWriteResponse = await self.stub.GrantWrite(
                request, timeout=self.timeout
            )
        return response

    async def commit_write(self, request: pb.CommitWriteRequest) -> pb.CommitWriteResponse:
        """Check and announce a granted write; returns once it is durable and announced."""
        with translated(SERVICE):
            response: pb.CommitWriteResponse = await self.stub.CommitWrite(
                request, timeout=self.timeout
            )
        return response

    async def grant_read(
        self, instance: instance_pb2.InstanceRef, *, version_id: str = ""
    ) -> pb.GrantReadResponse:
        """A signed GET of one object and the SHA-256 its bytes must have."""
        with translated(SERVICE):
            response: pb.GrantReadResponse = await self.stub.GrantRead(
                pb.GrantReadRequest(instance=instance, version_id=version_id),
                timeout=self.timeout,
            )
        return response


async def _slices(data: bytes, size: int) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])

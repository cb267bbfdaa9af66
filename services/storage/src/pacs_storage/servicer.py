"""StorageService over gRPC: validate the messages, call the instance store, map the result.

Domain errors are raised, never turned into statuses here: the interceptor of
:mod:`pacs_common.grpc_server` maps them (INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, DATA_LOSS).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from pacs.storage.v1 import storage_service_pb2 as pb
from pacs.storage.v1 import storage_service_pb2_grpc as pb_grpc
from pacs_common.errors import InvalidArgumentError

from pacs_storage.grants import Grants
from pacs_storage.store import InstanceStore

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StorageService"].full_name

Context = grpc.aio.ServicerContext[Any, Any]


async def _chunks_after_header(requests: AsyncIterator[pb.PutRequest]) -> AsyncIterator[bytes]:
    """The chunks that follow the header; a second header is a protocol error."""
    async for request in requests:
        if request.WhichOneof("part") != "chunk":
            raise InvalidArgumentError("only the first Put message may carry a header")
        yield request.chunk


class StorageServicer(pb_grpc.StorageServiceServicer):
    """The gRPC face of :class:`InstanceStore`."""

    def __init__(self, store: InstanceStore, grants: Grants) -> None:
        self.store = store
        self.grants = grants

    async def Put(  # noqa: N802  (gRPC method name)
        self, request_iterator: AsyncIterator[pb.PutRequest], context: Context
    ) -> pb.PutResponse:
        requests = aiter(request_iterator)
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            raise InvalidArgumentError(
                "empty Put stream: the first message must be a header"
            ) from None
        if first.WhichOneof("part") != "header":
            raise InvalidArgumentError("the first Put message must carry the header")
        result = await self.store.put(first.header, _chunks_after_header(requests))
        return pb.PutResponse(
            object=result.info,
            already_existed=result.already_existed,
            new_version=result.new_version,
        )

    async def Get(  # noqa: N802
        self, request: pb.GetRequest, context: Context
    ) -> AsyncIterator[pb.GetResponse]:
        opened = await self.store.open(
            request.instance, request.version_id, request.offset, request.length
        )
        # aclosing: a client that goes away mid-stream releases the S3 connection at once.
        async with contextlib.aclosing(opened.chunks) as chunks:
            yield pb.GetResponse(object=opened.info)
            async for chunk in chunks:
                yield pb.GetResponse(chunk=chunk)

    async def Head(self, request: pb.HeadRequest, context: Context) -> pb.HeadResponse:  # noqa: N802
        info = await self.store.head(request.instance, request.version_id)
        return pb.HeadResponse(object=info)

    async def Delete(  # noqa: N802
        self, request: pb.DeleteRequest, context: Context
    ) -> pb.DeleteResponse:
        removed = await self.store.delete(request.instance, request.all_versions)
        return pb.DeleteResponse(deleted_versions=removed)

    async def List(self, request: pb.ListRequest, context: Context) -> pb.ListResponse:  # noqa: N802
        objects, token = await self.store.list(
            request.tenant,
            request.study_instance_uid,
            request.series_instance_uid,
            request.page_size,
            request.page_token,
        )
        return pb.ListResponse(objects=objects, next_page_token=token)

    async def GrantWrite(  # noqa: N802
        self, request: pb.GrantWriteRequest, context: Context
    ) -> pb.GrantWriteResponse:
        await self.store.ensure_bucket()
        return await self.grants.grant_write(request)

    async def CommitWrite(  # noqa: N802
        self, request: pb.CommitWriteRequest, context: Context
    ) -> pb.CommitWriteResponse:
        result = await self.grants.commit_write(request)
        return pb.CommitWriteResponse(object=result.info, already_existed=result.already_existed)

    async def GrantRead(  # noqa: N802
        self, request: pb.GrantReadRequest, context: Context
    ) -> pb.GrantReadResponse:
        return await self.grants.grant_read(request)

"""A StorageService that only moves bytes: the floor of the gRPC hop for the storage bench.

Put reads the whole stream and remembers the object's size; Get streams that many bytes back
in the real service's chunk size. No S3, no hashing, no Kafka, but the same server set-up as
the real service (its :class:`~pacs_common.service_host.ServiceHost`: mutual TLS, error mapping,
tracing and metrics interceptors) and the same client. The bench times it beside the real
service and plain boto3: what this costs relative to boto3 is the part of the service's cost
that no S3 tuning can remove.

    python services/storage/bench/transport_only.py PORT
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

from pacs.storage.v1 import storage_service_pb2 as pb
from pacs.storage.v1 import storage_service_pb2_grpc as pb_grpc
from pacs.type.v1 import instance_pb2
from pacs_common.errors import NotFoundError
from pacs_common.service_host import ServiceHost
from pacs_storage.servicer import SERVICE_NAME
from pacs_storage.settings import StorageSettings


class TransportOnlyStorage(pb_grpc.StorageServiceServicer):
    """Put and Get without storage behind them."""

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self.sizes: dict[str, int] = {}
        self.filler = bytes(chunk_size)

    async def Put(  # noqa: N802  (gRPC method name)
        self, request_iterator: AsyncIterator[pb.PutRequest], context: Any
    ) -> pb.PutResponse:
        header: pb.PutHeader | None = None
        size = 0
        async for request in request_iterator:
            if request.WhichOneof("part") == "header":
                header = request.header
            else:
                size += len(request.chunk)
        assert header is not None
        self.sizes[header.instance.sop_instance_uid] = size
        info = instance_pb2.ObjectInfo(instance=header.instance, size=size)
        return pb.PutResponse(object=info)

    async def Get(  # noqa: N802
        self, request: pb.GetRequest, context: Any
    ) -> AsyncIterator[pb.GetResponse]:
        size = self.sizes.get(request.instance.sop_instance_uid)
        if size is None:
            raise NotFoundError("instance not found")
        yield pb.GetResponse(object=instance_pb2.ObjectInfo(instance=request.instance, size=size))
        for start in range(0, size, self.chunk_size):
            yield pb.GetResponse(chunk=self.filler[: min(self.chunk_size, size - start)])


async def serve(port: int) -> None:
    settings = StorageSettings(grpc_port=port)
    servicer = TransportOnlyStorage(settings.chunk_size)
    host = ServiceHost(
        settings,
        [SERVICE_NAME],
        lambda s: pb_grpc.add_StorageServiceServicer_to_server(servicer, s),
    )
    await host.start()
    await host.run_until_signalled()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))

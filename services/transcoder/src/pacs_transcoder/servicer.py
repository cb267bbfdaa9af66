"""TranscodeService over gRPC: validate the request, read the source, convert, stream back.

Every call is authenticated (:func:`authorization`): services named in ``trusted_services``
(the gateway, DICOMweb, de-identification) call with their mutual-TLS identity and name the
tenant; others need a bearer token with the role ``retrieve`` (a stored instance is read in the
token's tenant only). Domain errors are raised and mapped to statuses by the host's interceptor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from pacs.transcode.v1 import transcode_service_pb2 as pb
from pacs.transcode.v1 import transcode_service_pb2_grpc as pb_grpc
from pacs_common.auth import AuthorizationInterceptor, AuthSettings, Role, caller_of
from pacs_common.clients.storage import StorageClient
from pacs_common.errors import InvalidArgumentError, PacsError
from pacs_common.metrics import TRANSCODE_FAILURES

from pacs_transcoder.conversion import Converted, Converter

_Context = grpc.aio.ServicerContext[Any, Any]

SERVICE = pb.DESCRIPTOR.services_by_name["TranscodeService"].full_name
ROLES = {"Transcode": Role.RETRIEVE, "TranscodeStored": Role.RETRIEVE}


def authorization(settings: AuthSettings) -> AuthorizationInterceptor:
    """The interceptor that authenticates TranscodeService callers and checks :data:`ROLES`."""
    return AuthorizationInterceptor(settings, {SERVICE: ROLES})


def _check_options(options: pb.TranscodeOptions) -> str:
    syntax = options.transfer_syntax_uid.strip()
    if not syntax:
        raise InvalidArgumentError("options.transfer_syntax_uid is required")
    return syntax


def _result(converted: Converted) -> pb.TranscodeResult:
    result = converted.result
    return pb.TranscodeResult(
        source_transfer_syntax_uid=result.source_transfer_syntax,
        transfer_syntax_uid=result.transfer_syntax,
        sop_instance_uid=result.sop_instance_uid,
        lossy=result.lossy,
        new_instance=result.new_instance,
        frames=result.frames,
        size=converted.size,
        unchanged=converted.unchanged,
    )


async def _chunks_after_header(
    requests: AsyncIterator[pb.TranscodeRequest],
) -> AsyncIterator[bytes]:
    async for request in requests:
        if request.WhichOneof("part") != "chunk":
            raise InvalidArgumentError("only the first Transcode message may carry a header")
        yield request.chunk


class TranscodeServicer(pb_grpc.TranscodeServiceServicer):
    """The gRPC face of :class:`Converter`."""

    def __init__(self, converter: Converter, storage: StorageClient, chunk_size: int) -> None:
        self.converter = converter
        self.storage = storage
        self.chunk_size = chunk_size

    async def Transcode(  # noqa: N802  (gRPC method name)
        self, request_iterator: AsyncIterator[pb.TranscodeRequest], context: _Context
    ) -> AsyncIterator[pb.TranscodeResponse]:
        requests = aiter(request_iterator)
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            raise InvalidArgumentError("empty Transcode stream: send a header first") from None
        if first.WhichOneof("part") != "header":
            raise InvalidArgumentError("the first Transcode message must carry the header")
        options = first.header.options
        syntax = _check_options(options)
        async for result, chunk in self._run(_chunks_after_header(requests), syntax, options):
            if result is not None:
                yield pb.TranscodeResponse(result=result)
            else:
                yield pb.TranscodeResponse(chunk=chunk)

    async def TranscodeStored(  # noqa: N802
        self, request: pb.TranscodeStoredRequest, context: _Context
    ) -> AsyncIterator[pb.TranscodeStoredResponse]:
        syntax = _check_options(request.options)
        instance = request.instance
        tenant = caller_of(context).tenant_for(instance.tenant)
        ref = type(instance)()
        ref.CopyFrom(instance)
        ref.tenant = tenant
        _, chunks = await self.storage.open(ref, version_id=request.version_id)
        async for result, chunk in self._run(chunks, syntax, request.options):
            if result is not None:
                yield pb.TranscodeStoredResponse(result=result)
            else:
                yield pb.TranscodeStoredResponse(chunk=chunk)

    async def _run(
        self, chunks: AsyncIterator[bytes], syntax: str, options: pb.TranscodeOptions
    ) -> AsyncIterator[tuple[pb.TranscodeResult | None, bytes]]:
        """The result first, then the output's chunks."""
        try:
            async with self.converter.converted(chunks, syntax, options.allow_lossy) as done:
                yield _result(done), b""
                async for chunk in done.chunks(self.chunk_size):
                    yield None, chunk
        except PacsError as exc:
            TRANSCODE_FAILURES.labels(type(exc).__name__).inc()
            raise

"""An async client of the transcoder's ``TranscodeService``.

Usage::

    transcoder = TranscodeClient(open_channel(target, tls), timeout=120)
    result, chunks = await transcoder.open_stored(ref, JPEGLSLossless)   # a stored instance
    async for chunk in chunks: ...
    result, data = await transcoder.transcode(part10_bytes, HTJ2KLossless)  # bytes in, bytes out

The answer's first message is the :class:`TranscodeResult` (syntax, SOP Instance UID — new when
lossy compression made a new instance —, lossy, size), then the object's bytes. Failures raise
the project's errors (:mod:`pacs_common.clients.errors`): InvalidArgumentError for an object the
transcoder cannot read, FailedPreconditionError when the pixels cannot be written in the syntax
or the target is lossy without ``allow_lossy``, NotFoundError for a missing stored instance,
UnavailableError when the transcoder or storage cannot be reached.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

import grpc
from pacs.transcode.v1 import transcode_service_pb2 as pb
from pacs.transcode.v1 import transcode_service_pb2_grpc as pb_grpc
from pacs.type.v1 import instance_pb2

from pacs_common.clients.errors import translated

SERVICE = "transcoder"
DEFAULT_CHUNK_SIZE = 1024 * 1024

TranscodeResult = pb.TranscodeResult


class TranscodeClient:
    """Typed helpers over the generated stub; one instance per channel, safe to share."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        timeout: float | None = None,
    ) -> None:
        """Args:
        channel: a channel to TranscodeService (:func:`pacs_common.grpc_client.open_channel`).
        chunk_size: bytes per request message when given ``bytes``.
        timeout: deadline in seconds of every call, streams included (None: no deadline).
        """
        self.stub = pb_grpc.TranscodeServiceStub(channel)
        self.chunk_size = chunk_size
        self.timeout = timeout

    async def open_stored(
        self,
        instance: instance_pb2.InstanceRef,
        transfer_syntax_uid: str,
        *,
        allow_lossy: bool = False,
        version_id: str = "",
    ) -> tuple[pb.TranscodeResult, AsyncIterator[bytes]]:
        """Start transcoding a stored instance: the result, then the output's chunks."""
        call = self.stub.TranscodeStored(
            pb.TranscodeStoredRequest(
                instance=instance,
                version_id=version_id,
                options=pb.TranscodeOptions(
                    transfer_syntax_uid=transfer_syntax_uid, allow_lossy=allow_lossy
                ),
            ),
            timeout=self.timeout,
        )
        return await _result_and_chunks(call)

    async def transcode_stored(
        self,
        instance: instance_pb2.InstanceRef,
        transfer_syntax_uid: str,
        *,
        allow_lossy: bool = False,
        version_id: str = "",
    ) -> tuple[pb.TranscodeResult, bytes]:
        """A stored instance in ``transfer_syntax_uid``, in memory."""
        result, chunks = await self.open_stored(
            instance, transfer_syntax_uid, allow_lossy=allow_lossy, version_id=version_id
        )
        return result, b"".join([chunk async for chunk in chunks])

    async def open(
        self,
        data: bytes | AsyncIterable[bytes],
        transfer_syntax_uid: str,
        *,
        allow_lossy: bool = False,
        size_hint: int = 0,
    ) -> tuple[pb.TranscodeResult, AsyncIterator[bytes]]:
        """Start transcoding an uploaded Part 10 object: the result, then the output's chunks."""
        if isinstance(data, bytes | bytearray | memoryview):
            payload = bytes(data)
            size_hint = len(payload)
            chunks: AsyncIterable[bytes] = _slices(payload, self.chunk_size)
        else:
            chunks = data
        header = pb.TranscodeHeader(
            options=pb.TranscodeOptions(
                transfer_syntax_uid=transfer_syntax_uid, allow_lossy=allow_lossy
            ),
            size_hint=size_hint,
        )
        call = self.stub.Transcode(_requests(header, chunks), timeout=self.timeout)
        return await _result_and_chunks(call)

    async def transcode(
        self,
        data: bytes | AsyncIterable[bytes],
        transfer_syntax_uid: str,
        *,
        allow_lossy: bool = False,
    ) -> tuple[pb.TranscodeResult, bytes]:
        """An uploaded object in ``transfer_syntax_uid``, in memory."""
        result, chunks = await self.open(data, transfer_syntax_uid, allow_lossy=allow_lossy)
        return result, b"".join([chunk async for chunk in chunks])


Answer = pb.TranscodeResponse | pb.TranscodeStoredResponse
"""The two RPCs' answers have the same shape (buf wants one response message per RPC)."""


async def _result_and_chunks(
    call: AsyncIterable[Answer],
) -> tuple[pb.TranscodeResult, AsyncIterator[bytes]]:
    stream: AsyncIterator[Answer] = aiter(call)
    with translated(SERVICE):
        first: pb.TranscodeResponse | pb.TranscodeStoredResponse = await anext(stream)

    async def chunks() -> AsyncIterator[bytes]:
        with translated(SERVICE):
            async for message in stream:
                yield message.chunk

    return first.result, chunks()


async def _requests(
    header: pb.TranscodeHeader, chunks: AsyncIterable[bytes]
) -> AsyncIterator[pb.TranscodeRequest]:
    yield pb.TranscodeRequest(header=header)
    async for chunk in chunks:
        if chunk:
            yield pb.TranscodeRequest(chunk=chunk)


async def _slices(data: bytes, size: int) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])

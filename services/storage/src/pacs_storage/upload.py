"""Receiving one object from a Put stream with bounded memory.

Bytes are hashed (SHA-256) as they arrive. Below the multipart threshold the object is kept in
memory and written later with one PutObject; once it reaches the threshold (or the caller's size
hint says it will) the bytes go to an S3 multipart upload part by part, each part carrying its
own SHA-256 that S3 verifies, with at most ``max_parts_in_flight`` parts uploading at a time.
Memory per Put is therefore bounded by about ``(max_parts_in_flight + 1) * part_size`` whatever
the object's size. The upload is not completed here: the caller decides, once the whole digest
is known, whether the object is new (complete it) or a repeat (abort it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pacs_common.errors import InvalidArgumentError, ResourceExhaustedError

from pacs_storage.bucket import Bucket
from pacs_storage.streamed_put import StreamedPut, StreamTarget
from pacs_storage.versions import b64_digest

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef


class MultipartUpload:
    """One S3 multipart upload fed with arbitrary-sized chunks."""

    def __init__(
        self,
        bucket: Bucket,
        key: str,
        metadata: Mapping[str, str],
        part_size: int,
        max_in_flight: int,
    ) -> None:
        self.bucket = bucket
        self.key = key
        self.metadata = dict(metadata)
        self.part_size = part_size
        self.upload_id = ""
        self._buffer = bytearray()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: list[asyncio.Task[CompletedPartTypeDef]] = []
        self._failure: BaseException | None = None

    async def begin(self) -> None:
        """Open the upload on S3."""
        self.upload_id = await self.bucket.create_multipart(self.key, self.metadata)

    async def add(self, chunk: bytes | bytearray) -> None:
        """Append bytes; every full part starts uploading (waiting for a free slot)."""
        self._buffer += chunk
        while len(self._buffer) >= self.part_size:
            part = bytes(self._buffer[: self.part_size])
            del self._buffer[: self.part_size]
            await self._start_part(part)

    async def _start_part(self, data: bytes) -> None:
        self._raise_if_failed()
        await self._slots.acquire()
        number = len(self._tasks) + 1
        task = asyncio.create_task(self._upload(number, data), name=f"part-{number}")
        self._tasks.append(task)

    async def _upload(self, number: int, data: bytes) -> CompletedPartTypeDef:
        try:
            # hashlib releases the GIL on large buffers: hash in a thread, off the event loop.
            digest = await asyncio.to_thread(lambda: hashlib.sha256(data).digest())
            return await self.bucket.upload_part(
                self.key, self.upload_id, number, data, b64_digest(digest)
            )
        except BaseException as exc:
            self._failure = self._failure or exc
            raise
        finally:
            self._slots.release()

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def finish(self) -> list[CompletedPartTypeDef]:
        """Upload the last (short) part and wait for all parts; returns them in order."""
        if self._buffer or not self._tasks:
            last = bytes(self._buffer)
            self._buffer.clear()
            await self._start_part(last)
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        parts: list[CompletedPartTypeDef] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            parts.append(result)
        return parts

    async def complete(
        self, parts: list[CompletedPartTypeDef], condition: Mapping[str, str] | None = None
    ) -> None:
        """Make the object visible at :attr:`key` (see :meth:`Bucket.complete_multipart`)."""
        await self.bucket.complete_multipart(self.key, self.upload_id, parts, condition)

    async def abort(self) -> None:
        """Stop pending parts and discard the upload (safe to call more than once)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        self._buffer.clear()
        if self.upload_id:
            upload_id, self.upload_id = self.upload_id, ""
            await self.bucket.abort_multipart(self.key, upload_id)


@dataclass
class ReceivedObject:
    """An object received from a Put stream, not yet committed to its final key."""

    size: int
    sha256_hex: str
    data: bytes | None
    """The whole object when it stayed below the multipart threshold."""
    multipart: MultipartUpload | None
    """Otherwise the multipart upload holding it (parts uploaded, not completed)."""
    parts: list[CompletedPartTypeDef]
    streamed: StreamedPut | None = None
    """The write to S3 made while the object arrived (see ``streamed_put``), if one was."""
    streamed_written: bool = False
    """True when S3 confirmed that write."""
    prefix: bytes = b""
    """The object's first bytes, up to the ``keep_prefix`` asked for (all of a smaller one)."""
    sending_ae_title: str = ""
    """The calling AE title the writer named (``PutHeader.sending_ae_title``), for metadata."""


@dataclass(frozen=True)
class UploadPolicy:
    """Sizes that decide between one PutObject and a multipart upload."""

    multipart_threshold: int
    part_size: int
    max_parts_in_flight: int
    max_object_size: int


async def receive_object(
    chunks: AsyncIterator[bytes],
    *,
    bucket: Bucket,
    policy: UploadPolicy,
    size_hint: int,
    multipart_key: str,
    multipart_metadata: Mapping[str, str],
    stream_to: StreamTarget | None = None,
    keep_prefix: int = 0,
) -> ReceivedObject:
    """Consume ``chunks``, hashing them, buffering or uploading parts as they come.

    Args:
        chunks: the object's bytes, in order.
        bucket: where multipart parts go.
        policy: the size limits.
        size_hint: the caller's announced size; at or above the threshold multipart starts at
            once instead of after buffering ``multipart_threshold`` bytes.
        multipart_key: key of the multipart upload, if one is needed.
        multipart_metadata: metadata of that upload.
        stream_to: write the object there with one PutObject while it arrives (only for a
            size below the multipart threshold); the bytes are kept all the same, so that
            the caller can write them another way if that write did not happen.

    Raises:
        InvalidArgumentError: the stream carried no bytes.
        ResourceExhaustedError: the object is larger than ``max_object_size``.
    """
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray()
    prefix = bytearray()
    upload: MultipartUpload | None = None
    streamed = StreamedPut(bucket, stream_to) if stream_to is not None else None

    async def start_multipart() -> MultipartUpload:
        started = MultipartUpload(
            bucket,
            multipart_key,
            multipart_metadata,
            policy.part_size,
            policy.max_parts_in_flight,
        )
        await started.begin()
        return started

    try:
        if size_hint >= policy.multipart_threshold:
            upload = await start_multipart()
        async for chunk in chunks:
            if not chunk:
                continue
            size += len(chunk)
            if size > policy.max_object_size:
                raise ResourceExhaustedError(
                    f"object larger than the limit of {policy.max_object_size} bytes"
                )
            digest.update(chunk)
            if len(prefix) < keep_prefix:
                prefix += chunk[: keep_prefix - len(prefix)]
            if streamed is not None:
                streamed.feed(chunk)
            if upload is not None:
                await upload.add(chunk)
                continue
            buffer += chunk
            if len(buffer) >= policy.multipart_threshold:
                upload = await start_multipart()
                await upload.add(buffer)
                buffer = bytearray()
        if size == 0:
            raise InvalidArgumentError("the Put stream carried no bytes")
        parts = await upload.finish() if upload is not None else []
        written = await streamed.finish() if streamed is not None else False
    except BaseException:
        if upload is not None:
            await asyncio.shield(upload.abort())
        if streamed is not None:
            await asyncio.shield(streamed.undo())
        raise
    data = bytes(buffer) if upload is None else None
    return ReceivedObject(
        size=size,
        sha256_hex=digest.hexdigest(),
        data=data,
        multipart=upload,
        parts=parts,
        streamed=streamed,
        streamed_written=written,
        prefix=bytes(prefix),
    )

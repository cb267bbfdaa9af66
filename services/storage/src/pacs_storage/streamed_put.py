"""Writing a small object to S3 while its Put stream is still arriving.

Without this, a Put below the multipart threshold runs in two steps: receive the whole object
over gRPC, then send it to S3 with one PutObject. When the caller announces the size and the
SHA-256 up front (the gateway always does), the PutObject can start with the first chunk
instead: botocore reads its body from a :class:`RequestBodyPipe` in its worker thread while the
event loop feeds the pipe, so the two transfers overlap. The write is conditional
(``If-None-Match: *``) and S3 verifies the announced SHA-256 (the ``x-amz-checksum-sha256``
header, signed) before the object becomes visible, so a short, long or altered stream stores
nothing: the request fails, and the caller falls back to the buffered path, which it can because
the bytes are still kept in memory (below the threshold, as before).

S3 stores the object as soon as it has the announced bytes, possibly before botocore reports
back, so a write that "failed" may exist all the same. When the Put as a whole fails, the
object is removed if it is this write's own (its version id in the metadata): nothing is left
stored but unannounced.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from pacs_common.errors import PacsError

from pacs_storage.bucket import Bucket
from pacs_storage.versions import META_VERSION

log = logging.getLogger(__name__)


class StreamAbandonedError(Exception):
    """The Put stream ended otherwise than with exactly the announced bytes."""


class RequestBodyPipe:
    """A blocking file-like request body of ``size`` bytes, fed from the event loop.

    Hand-written because botocore reads request bodies synchronously (``read(n)`` in its
    worker thread) and nothing in boto3 or the standard library bridges an asyncio producer to
    such a reader; ``feed`` and ``fail`` never block the event loop. The body ends once
    ``size`` bytes were read, without waiting for the stream's end, so that S3's answer (which
    it sends once it has those bytes) is read at once.
    """

    def __init__(self, size: int) -> None:
        self._unread = size
        self._chunks: collections.deque[memoryview] = collections.deque()
        self._changed = threading.Condition()
        self._failure: BaseException | None = None

    def feed(self, chunk: bytes) -> None:
        """Append bytes for the reader (no copy: ``chunk`` must not change afterwards)."""
        with self._changed:
            self._chunks.append(memoryview(chunk))
            self._changed.notify()

    def fail(self, reason: BaseException) -> None:
        """Make a ``read`` still waiting for bytes raise ``reason``: the HTTP request is
        abandoned with fewer bytes than its Content-Length, so S3 stores nothing."""
        with self._changed:
            self._failure = reason
            self._chunks.clear()
            self._changed.notify()

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is queued for a negative size), waiting for them."""
        with self._changed:
            if self._unread == 0 or size == 0:
                return b""
            while not self._chunks and self._failure is None:
                self._changed.wait()
            if self._failure is not None:
                raise self._failure
            head = self._chunks.popleft()
            limit = self._unread if size < 0 else min(size, self._unread)
            if len(head) > limit:
                self._chunks.appendleft(head[limit:])
                head = head[:limit]
            self._unread -= len(head)
            return bytes(head)


@dataclass(frozen=True)
class StreamTarget:
    """Where and how a Put's object is written while it arrives."""

    key: str
    size: int
    sha256_b64: str
    metadata: Mapping[str, str]
    condition: Mapping[str, str]


class StreamedPut:
    """One PutObject running while its body is fed chunk by chunk."""

    def __init__(self, bucket: Bucket, target: StreamTarget) -> None:
        self.target = target
        self._bucket = bucket
        self._pipe = RequestBodyPipe(target.size)
        self._fed = 0
        self._task = asyncio.create_task(
            bucket.put(
                target.key,
                self._pipe,
                target.sha256_b64,
                target.metadata,
                target.condition,
                size=target.size,
            ),
            name="streamed-put",
        )

    def feed(self, chunk: bytes) -> None:
        """Pass one received chunk on (a stream longer than announced abandons the write if
        it is still running; if S3 already has the announced bytes, the caller's digest check
        refuses the Put and :meth:`undo` removes the object)."""
        self._fed += len(chunk)
        if self._task.done():
            return  # S3 answered already: keep nothing for it
        if self._fed > self.target.size:
            self._pipe.fail(StreamAbandonedError("more bytes than announced"))
        else:
            self._pipe.feed(chunk)

    async def finish(self) -> bool:
        """Wait for S3: True once it confirmed the write; False when the write did not happen
        as far as is known (conflict, short stream, S3 error) and the caller must write the
        object another way."""
        if self._fed < self.target.size:
            self._pipe.fail(StreamAbandonedError("fewer bytes than announced"))
        try:
            await self._task
        except Exception as exc:
            log.debug("streamed write not done, writing the buffered object: %r", exc)
            return False
        return True

    async def undo(self) -> None:
        """The Put failed: stop the write, and remove the object if this write stored it."""
        self._pipe.fail(StreamAbandonedError("the Put failed"))
        with contextlib.suppress(Exception):
            await self._task
        try:
            current = await self._bucket.head(self.target.key)
            # Only this write's own object: one stored before (If-None-Match refused this
            # write) or by another writer since carries another version id.
            if current is not None and (
                current.metadata.get(META_VERSION) == self.target.metadata.get(META_VERSION)
            ):
                await self._bucket.delete(self.target.key)
        except PacsError as exc:
            # The Put fails anyway; an object left here is found "already present" by the
            # sender's retry, which announces it.
            log.warning("could not remove the object of a failed Put: %s", exc.message)

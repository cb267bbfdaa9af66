"""Writing a small object to S3 while its Put stream is still arriving.

Without this, a Put below the multipart threshold runs in two steps: receive the whole object
over gRPC, then send it to S3 with one PutObject. When the caller announces the size and the
SHA-256 up front (the gateway always does), the PutObject can start with the first chunk
instead: botocore reads its body from a :class:`RequestBodyPipe` in its worker thread while the
event loop feeds the pipe, so the two transfers overlap. The write is conditional
(``If-None-Match: *``) and S3 verifies the announced SHA-256 (the ``x-amz-checksum-sha256``
header, signed) before the object becomes visible, so a short, long or altered stream stores
no object of its own: the request fails, and the caller falls back to the buffered path, which
it can because the bytes are still kept in memory (below the threshold, as before).

The request is never abandoned by cutting its body short. A server that sees the connection
close before the announced Content-Length may take the bytes it got as the whole body, verify
the checksum over them and store the object, after the client was told the request failed
(versitygw does: a stream that announced too large a size but the right SHA-256 was stored by
the abandoned write, and the fallback then found it "already existing"). So a stream that ends
early is completed with zero bytes up to the announced size (:meth:`RequestBodyPipe.pad`),
which breaks the checksum, and a longer stream hands over only the announced bytes: either way
the request runs to its end and S3 answers it, and once :meth:`StreamedPut.finish` or
:meth:`StreamedPut.undo` returns, nothing of this write can still happen at S3.

S3 stores the object as soon as it has the announced bytes, possibly before botocore reports
back, so a write that "failed" (a connection lost after S3 stored the object) may exist all the
same. When the Put as a whole fails, the object is removed if it is this write's own (its
version id in the metadata): nothing is left stored but unannounced.
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

# Largest read of padding handed to botocore at once.
_PAD_BLOCK = 64 * 1024


class RequestBodyPipe:
    """A blocking file-like request body of ``size`` bytes, fed from the event loop.

    Hand-written because botocore reads request bodies synchronously (``read(n)`` in its
    worker thread) and nothing in boto3 or the standard library bridges an asyncio producer to
    such a reader; ``feed`` and ``pad`` never block the event loop. The body ends
    once ``size`` bytes were read, without waiting for the stream's end, so that S3's answer
    (which it sends once it has those bytes) is read at once; bytes fed beyond ``size`` are
    never read.
    """

    def __init__(self, size: int) -> None:
        self._unread = size
        self._chunks: collections.deque[memoryview] = collections.deque()
        self._changed = threading.Condition()
        self._padded = False

    def feed(self, chunk: bytes) -> None:
        """Append bytes for the reader (no copy: ``chunk`` must not change afterwards)."""
        with self._changed:
            self._chunks.append(memoryview(chunk))
            self._changed.notify()

    def pad(self) -> None:
        """No more bytes come: once the queued ones are read, the body goes on with zero
        bytes up to ``size``. The request then ends normally and S3 answers it (refusing the
        object, whose checksum covers other bytes), instead of deciding alone what to do with
        a body cut short (see the module docstring)."""
        with self._changed:
            self._padded = True
            self._changed.notify()

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is queued for a negative size), waiting for them."""
        with self._changed:
            if self._unread == 0 or size == 0:
                return b""
            while not self._chunks and not self._padded:
                self._changed.wait()
            limit = self._unread if size < 0 else min(size, self._unread)
            if not self._chunks:
                padding = min(limit, _PAD_BLOCK)
                self._unread -= padding
                return bytes(padding)
            head = self._chunks.popleft()
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
        """Pass one received chunk on. Of a stream longer than announced only the announced
        bytes go to S3: if they match the announced SHA-256 the object is stored, the caller's
        digest check (over the whole stream) refuses the Put and :meth:`undo` removes it."""
        wanted = self.target.size - self._fed
        self._fed += len(chunk)
        if self._task.done() or wanted <= 0:
            return  # S3 answered already, or has all the bytes it will get
        self._pipe.feed(chunk if len(chunk) <= wanted else chunk[:wanted])

    async def finish(self) -> bool:
        """Wait for S3: True once it confirmed the write; False when the write did not happen
        as far as is known (conflict, short stream, S3 error) and the caller must write the
        object another way.

        A stream shorter than announced is padded (:meth:`RequestBodyPipe.pad`): the zeros
        break the checksum, so S3 refuses the write, and above all it has answered the
        request before this returns, so the fallback never meets an object stored late by
        this write.
        """
        if self._fed < self.target.size:
            self._pipe.pad()
        try:
            await self._task
        except Exception as exc:
            log.debug("streamed write not done, writing the buffered object: %r", exc)
            return False
        return True

    async def undo(self) -> None:
        """The Put failed: end the write, and remove the object if this write stored it.

        The write is ended by padding, not by cutting its body (the bytes received may be
        the whole object as its SHA-256 announced it): once S3 answered, the HEAD below sees
        whatever this write stored, and nothing is stored after it.
        """
        self._pipe.pad()
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

"""Objects written and read straight to and from S3 through storage's grants.

Storage signs the requests and announces the result; the bytes go from this process to S3 and
back without passing through the storage service (see ``pacs_storage.grants`` for the rules).
Usage::

    direct = DirectStorage(StorageClient(channel))
    response = await direct.put(ref, part10)        # durable and announced when it returns
    data = await direct.get(ref)                    # SHA-256 verified
    async for chunk in direct.get_stream(ref): ...  # verified before the last chunk

The HTTP client is urllib3 (already the transport under boto3), one pooled client per process,
each request in a worker thread so the event loop keeps going. A write grant only creates:
when the instance is already stored with other bytes, :meth:`DirectStorage.put` falls back to
storage's streaming ``Put``, which keeps the stored version.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import urllib3
from opentelemetry import trace
from pacs.storage.v1 import storage_service_pb2 as pb
from pacs.type.v1 import instance_pb2

from pacs_common.clients.storage import StorageClient
from pacs_common.errors import (
    DataLossError,
    FailedPreconditionError,
    NotFoundError,
    UnavailableError,
)

log = logging.getLogger(__name__)

MIB = 1024 * 1024
_PRECONDITION_FAILED = 412


class DirectStorage:
    """Puts and gets objects through grants of one storage service."""

    def __init__(
        self,
        storage: StorageClient,
        *,
        multipart_threshold: int = 1024 * MIB,
        part_size: int = 16 * MIB,
        max_parts_in_flight: int = 8,
        read_chunk_size: int = MIB,
        ca_certs: str | None = None,
        timeout_s: float = 60.0,
        pool_size: int = 32,
    ) -> None:
        """Args:
        storage: the storage service's client (it signs and commits).
        multipart_threshold: objects at least this large go up in parts, concurrently (one
            PUT takes up to 5 GiB; parts cost S3 a reassembly, worth it only for very large
            objects or a remote S3 whose single stream is slow).
        part_size: bytes per part (at least 5 MiB, S3's minimum).
        max_parts_in_flight: parts sent at once.
        read_chunk_size: bytes per chunk of :meth:`get_stream`.
        ca_certs: CA bundle for an S3 endpoint over HTTPS (None: the system's).
        timeout_s: connect and read timeout of each request.
        pool_size: HTTP connections kept per host.
        """
        self.storage = storage
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.read_chunk_size = read_chunk_size
        self._parts_in_flight = asyncio.Semaphore(max_parts_in_flight)
        self._http = urllib3.PoolManager(
            maxsize=pool_size,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            ca_certs=ca_certs,
        )

    # --- write ---------------------------------------------------------------------------

    async def put(
        self,
        instance: instance_pb2.InstanceRef,
        data: bytes,
        *,
        sha256: str = "",
        sending_ae_title: str = "",
        new_version_allowed: bool = True,
    ) -> pb.CommitWriteResponse:
        """Store one object (``sha256``: its digest when the caller computed it already;
        ``sending_ae_title``: the calling AE that delivered it, recorded with it); returns
        once it is durable in S3 and announced on Kafka.

        When other bytes are stored at the address already, they are kept as a version and
        these become current; with ``new_version_allowed`` False nothing is written instead.

        Raises:
            FailedPreconditionError: other bytes are stored there and ``new_version_allowed``
                is False.
            UnavailableError: storage, S3 or Kafka cannot be reached: retry later.
            PacsError: storage refused the object (for example INVALID_ARGUMENT).
        """
        # One span over grant, PUT and commit, so that they stay one trace with the caller's.
        with trace.get_tracer(__name__).start_as_current_span("storage write through a grant"):
            return await self._put(instance, data, sha256, sending_ae_title, new_version_allowed)

    async def _put(
        self,
        instance: instance_pb2.InstanceRef,
        data: bytes,
        sha256: str,
        sending_ae_title: str,
        new_version_allowed: bool,
    ) -> pb.CommitWriteResponse:
        request = await asyncio.to_thread(self._grant_request, instance, data, sha256)
        request.sending_ae_title = sending_ae_title
        grant = await self.storage.grant_write(request)
        if len(grant.requests) == 1:
            await self._send(grant.requests[0], data)
        else:
            await asyncio.gather(*(self._send_part(part, data) for part in grant.requests))
        commit = pb.CommitWriteRequest(
            instance=instance, size=len(data), sha256=request.sha256, grant_token=grant.grant_token
        )
        try:
            return await self.storage.commit_write(commit)
        except FailedPreconditionError:
            if not new_version_allowed:
                # The grant's PUT could only create the object (If-None-Match: *), so S3 itself
                # decided that the other bytes came first: nothing of these was written.
                raise
            # Stored with other bytes: only Put keeps the stored object as a version.
            log.info("instance stored with other bytes; replacing it through Put")
            response = await self.storage.put(
                instance,
                data,
                expected_sha256=request.sha256,
                sending_ae_title=sending_ae_title,
            )
            return pb.CommitWriteResponse(
                object=response.object,
                already_existed=response.already_existed,
                new_version=response.new_version,
            )

    def _grant_request(
        self, instance: instance_pb2.InstanceRef, data: bytes, sha256: str = ""
    ) -> pb.GrantWriteRequest:
        """The grant request with the object's digests (computed off the event loop, unless
        the caller already knows the whole object's)."""
        request = pb.GrantWriteRequest(
            instance=instance, size=len(data), sha256=sha256 or hashlib.sha256(data).hexdigest()
        )
        if len(data) >= self.multipart_threshold:
            view = memoryview(data)
            request.part_size = self.part_size
            request.part_sha256.extend(
                hashlib.sha256(view[start : start + self.part_size]).hexdigest()
                for start in range(0, len(data), self.part_size)
            )
        return request

    async def _send_part(self, signed: pb.SignedRequest, data: bytes) -> None:
        async with self._parts_in_flight:
            await self._send(signed, data[signed.offset : signed.offset + signed.length])

    async def _send(self, signed: pb.SignedRequest, body: bytes) -> None:
        """Send one signed PUT. A 412 means the instance exists: the commit decides."""
        response = await self._request(signed, body=body)
        if response.status == _PRECONDITION_FAILED and not signed.length:
            return
        _raise_for(response, "write")

    # --- read ----------------------------------------------------------------------------

    async def get(self, instance: instance_pb2.InstanceRef, *, version_id: str = "") -> bytes:
        """The whole object, its SHA-256 verified.

        Raises:
            NotFoundError: no such instance or version.
            DataLossError: the bytes read are not the ones stored.
            UnavailableError: storage or S3 cannot be reached.
        """
        grant = await self.storage.grant_read(instance, version_id=version_id)
        # One worker-thread hop for the whole body and its digest (hashlib releases the GIL).
        data, sha = await asyncio.to_thread(self._read_whole, grant.request)
        if sha != grant.object.sha256:
            raise DataLossError("the object read from S3 does not match its SHA-256")
        return data

    def _read_whole(self, signed: pb.SignedRequest) -> tuple[bytes, str]:
        try:
            response = self._http.request(
                signed.method, signed.url, headers=dict(signed.headers), redirect=False
            )
        except urllib3.exceptions.HTTPError as exc:
            raise UnavailableError(f"S3 cannot be reached: {type(exc).__name__}") from exc
        _raise_for(response, "read")
        data: bytes = response.data
        return data, hashlib.sha256(data).hexdigest()

    async def get_stream(
        self, instance: instance_pb2.InstanceRef, *, version_id: str = ""
    ) -> AsyncIterator[bytes]:
        """The object chunk by chunk; the last chunk is held back until the SHA-256 of all
        of them matched, so a consumer never takes corrupt bytes as complete."""
        _, chunks = await self.open(instance, version_id=version_id)
        async for chunk in chunks:
            yield chunk

    async def open(
        self, instance: instance_pb2.InstanceRef, *, version_id: str = ""
    ) -> tuple[instance_pb2.ObjectInfo, AsyncIterator[bytes]]:
        """Start reading (as :meth:`StorageClient.open` does for a whole object): the object's
        description, then its verified chunks.

        Raises:
            NotFoundError: no such instance or version (at once, before any chunk).
        """
        grant = await self.storage.grant_read(instance, version_id=version_id)
        return grant.object, self._verified_chunks(grant)

    async def _verified_chunks(self, grant: pb.GrantReadResponse) -> AsyncIterator[bytes]:
        response = await self._request(grant.request, preload=False)
        try:
            _raise_for(response, "read")
            digest = hashlib.sha256()
            held = b""
            while True:
                chunk = await asyncio.to_thread(
                    _read_hashed, response, self.read_chunk_size, digest
                )
                if not chunk:
                    break
                if held:
                    yield held
                held = chunk
            if digest.hexdigest() != grant.object.sha256:
                raise DataLossError("the object read from S3 does not match its SHA-256")
            if held:
                yield held
        finally:
            response.release_conn()

    # --- HTTP ----------------------------------------------------------------------------

    async def _request(
        self, signed: pb.SignedRequest, body: bytes | None = None, preload: bool = True
    ) -> Any:
        try:
            return await asyncio.to_thread(
                self._http.request,
                signed.method,
                signed.url,
                body=body,
                headers=dict(signed.headers),
                preload_content=preload,
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise UnavailableError(f"S3 cannot be reached: {type(exc).__name__}") from exc

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.clear()


def _read_hashed(response: Any, size: int, digest: Any) -> bytes:
    try:
        chunk: bytes = response.read(size)
    except urllib3.exceptions.HTTPError as exc:
        raise UnavailableError(f"S3 read interrupted: {type(exc).__name__}") from exc
    digest.update(chunk)
    return chunk


def _raise_for(response: Any, what: str) -> None:
    """Map an S3 answer to the project's errors (as storage's own bucket access does)."""
    status = int(response.status)
    if status < 300:
        return
    if status == 404:
        raise NotFoundError("object not found in S3")
    detail = bytes(response.data[:300]).decode("utf-8", "replace") if response.data else ""
    # 400 BadDigest: the bytes changed on the way; 403: an expired or mangled grant; 5xx: S3.
    # All are worth a retry with a new grant; the caller's sender keeps the image meanwhile.
    log.warning("S3 refused a granted %s", what, extra={"status": status})
    raise UnavailableError(f"S3 refused the granted {what} (HTTP {status}): {_code(detail)}")


def _code(detail: str) -> str:
    """The S3 error code of an XML error body, if any."""
    start = detail.find("<Code>")
    end = detail.find("</Code>")
    return detail[start + 6 : end] if 0 <= start < end else "no error code"

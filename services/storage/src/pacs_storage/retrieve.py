"""Reading stored objects back: finding a version, and streaming with SHA-256 verification.

A full read is hashed while it streams and compared with the SHA-256 recorded at write time.
The last chunk is held back until the digest is checked, so on a mismatch the caller never
receives the complete object: the stream ends with DATA_LOSS instead (a silent OK would hand
corrupt pixel data to a viewer or an AI pipeline). A partial (ranged) read cannot be hashed
against the whole-object digest; it is served from the same object as the description it
returns, and relies on S3's own integrity checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from pacs.type.v1 import instance_pb2
from pacs_common.errors import DataLossError, InvalidArgumentError, NotFoundError

from pacs_storage.bucket import Bucket, ObjectReader, StoredObject
from pacs_storage.keys import check_instance, check_version_id, object_key, version_key
from pacs_storage.versions import META_SHA256, object_info, version_of

log = logging.getLogger(__name__)


async def locate(
    bucket: Bucket, ref: instance_pb2.InstanceRef, version_id: str = ""
) -> tuple[str, StoredObject]:
    """The key and description of the current object, or of one version of it.

    Raises:
        NotFoundError: no such instance or version.
    """
    current_key = object_key(ref)
    if not version_id:
        current = await bucket.head(current_key)
        if current is None:
            raise NotFoundError("instance not found")
        return current_key, current
    check_version_id(version_id)
    earlier = await bucket.head(version_key(ref, version_id))
    if earlier is not None:
        return earlier.key, earlier
    current = await bucket.head(current_key)
    if current is not None and version_of(current) == version_id:
        return current_key, current
    raise NotFoundError("version not found")


async def _open_version(
    bucket: Bucket, ref: instance_pb2.InstanceRef, version_id: str, first: int, last: int | None
) -> ObjectReader:
    """GET the current object or one version directly (no HEAD first: one round trip)."""
    if not version_id:
        return await bucket.open(object_key(ref), first, last)
    check_version_id(version_id)
    try:
        return await bucket.open(version_key(ref, version_id), first, last)
    except NotFoundError:
        pass
    reader = await bucket.open(object_key(ref), first, last)
    if version_of(reader.info) != version_id:
        reader.close()
        raise NotFoundError("version not found")
    return reader


@dataclass
class OpenObject:
    """An object being read: its description and its (verified) chunks."""

    info: instance_pb2.ObjectInfo
    chunks: AsyncGenerator[bytes, None]


async def open_object(
    bucket: Bucket,
    ref: instance_pb2.InstanceRef,
    *,
    version_id: str,
    offset: int,
    length: int,
    chunk_size: int,
) -> OpenObject:
    """Open the current object (or one version) for reading, optionally a byte range.

    Raises:
        InvalidArgumentError: malformed address or range (also: offset beyond the end).
        NotFoundError: no such instance or version.
    """
    check_instance(ref)
    if offset < 0 or length < 0:
        raise InvalidArgumentError("offset and length must not be negative")
    last = offset + length - 1 if length else None
    # An offset beyond the end makes S3 answer InvalidRange, i.e. INVALID_ARGUMENT.
    reader = await _open_version(bucket, ref, version_id, offset, last)
    info = object_info(ref, reader.info, size=reader.total_size)
    full = offset == 0 and reader.info.size == reader.total_size
    expected = reader.info.metadata.get(META_SHA256, "") if full else ""
    return OpenObject(info, _verified(reader, chunk_size, expected))


async def _verified(
    reader: ObjectReader, chunk_size: int, sha256_hex: str
) -> AsyncGenerator[bytes, None]:
    """Yield the body in chunks; with ``sha256_hex`` hold the last chunk back until the digest
    matched, and raise DataLossError when it does not.

    The next chunk is read (and hashed, in the worker thread) while the current one is being
    sent, so S3 and the gRPC stream overlap instead of taking turns.
    """
    digest = hashlib.sha256() if sha256_hex else None
    received = 0
    pending = b""
    ahead = asyncio.ensure_future(reader.read(chunk_size, digest))
    try:
        while True:
            data = await ahead
            if not data:
                break
            received += len(data)
            ahead = asyncio.ensure_future(reader.read(chunk_size, digest))
            if pending:
                yield pending
            pending = data
        if received != reader.info.size:
            raise DataLossError("the stored object is shorter than its recorded size")
        if digest is not None and digest.hexdigest() != sha256_hex:
            log.error(
                "stored object does not match its SHA-256; refusing to serve it",
                extra={"object_key": reader.info.key, "version_id": version_of(reader.info)},
            )
            raise DataLossError("the stored object does not match its recorded SHA-256")
        if pending:
            yield pending
    finally:
        # A read still running in its thread must finish before the body is closed.
        with contextlib.suppress(BaseException):
            await ahead
        reader.close()

"""The instance store: Put, Head, Delete and List of DICOM instances in the bucket.

Write rules (the contract of ``StorageService.Put``):

* The bytes are verified end to end: S3 checks the SHA-256 of every PutObject and every part,
  and the caller may send ``expected_sha256`` to check the whole stream.
* A SOP Instance UID belongs to one study: one stored under another study is refused
  (ALREADY_EXISTS) before anything is written (:mod:`pacs_storage.uid_claims`).
* Identical bytes for an instance that is already stored write nothing (``already_existed``).
  Different bytes become the new current version; the previous one is first copied to the
  instance's versions prefix, so it stays readable by its version id.
* ``InstanceStored`` is published, and acknowledged by Kafka, only after S3 acknowledged the
  object; only then does Put return. It carries the object's header when that is at most
  ``event_header_cap_bytes`` (see :mod:`pacs_storage.event_header`). If Kafka fails after the
  write the caller gets UNAVAILABLE and retries with the same bytes: that retry finds the
  object ``already_existed`` and publishes the event again. So no object is
  stored-but-unannounced once a Put succeeded, and consumers (idempotent by SOP Instance UID)
  may see an announcement twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from pacs.storage.v1 import storage_service_pb2 as pb
from pacs.type.v1 import instance_pb2
from pacs_common.errors import (
    AlreadyExistsError,
    DataLossError,
    InvalidArgumentError,
    PacsError,
    UnavailableError,
)

from pacs_storage.announcer import Announcer
from pacs_storage.bucket import Bucket, StoredObject, WriteConflictError
from pacs_storage.event_header import event_header, prefix_to_keep
from pacs_storage.intents import Intent, IntentLog, remove_earlier_versions
from pacs_storage.keys import (
    check_descriptors,
    check_instance,
    instance_of_key,
    list_prefix,
    object_key,
    staging_key,
    version_key,
)
from pacs_storage.locks import KeyLocks
from pacs_storage.retrieve import OpenObject, locate, open_object
from pacs_storage.settings import StorageSettings
from pacs_storage.streamed_put import StreamTarget
from pacs_storage.uid_claims import UidClaims, claim_and_record
from pacs_storage.upload import ReceivedObject, UploadPolicy, receive_object
from pacs_storage.versions import (
    META_SHA256,
    META_VERSION,
    b64_digest,
    checked_ae_title,
    new_version_id,
    object_info,
    object_metadata,
    rfc3339,
    version_of,
)

log = logging.getLogger(__name__)

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# Rounds of read-compare-write when conditional writes keep losing races.
_WRITE_ATTEMPTS = 5


@dataclass(frozen=True)
class PutResult:
    """Outcome of one Put."""

    info: instance_pb2.ObjectInfo
    already_existed: bool
    new_version: bool


class InstanceStore:
    """Stores, describes, deletes and lists instances; announces writes and deletes."""

    def __init__(
        self,
        bucket: Bucket,
        announcer: Announcer,
        settings: StorageSettings,
        intents: IntentLog | None = None,
        claims: UidClaims | None = None,
    ) -> None:
        """Args:
        claims: SOP Instance UID claims (:mod:`pacs_storage.uid_claims`); None stores an
            instance under any study without asking.
        """
        self.bucket = bucket
        self.announcer = announcer
        self.settings = settings
        self.intents = intents or IntentLog(bucket)
        self.claims = claims
        self.policy = UploadPolicy(
            multipart_threshold=settings.multipart_threshold,
            part_size=settings.part_size,
            max_parts_in_flight=settings.max_parts_in_flight,
            max_object_size=settings.max_object_size,
        )
        self._locks = KeyLocks()
        self._streamed_puts = 0
        self._bucket_ready = not settings.create_bucket
        self._bucket_lock = asyncio.Lock()

    async def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (once per process; retried while S3 is down)."""
        if self._bucket_ready:
            return
        async with self._bucket_lock:
            if not self._bucket_ready:
                if await self.bucket.ensure_exists():
                    log.info("created bucket", extra={"bucket": self.bucket.name})
                self._bucket_ready = True

    # --- Put -----------------------------------------------------------------------------

    async def put(self, header: pb.PutHeader, chunks: AsyncIterator[bytes]) -> PutResult:
        """Store one object and announce it; see the module docstring for the rules.

        Raises:
            InvalidArgumentError: bad header, empty stream, or bytes differ from
                ``expected_sha256``.
            UnavailableError: S3 or Kafka is unreachable.
        """
        ref = header.instance
        check_instance(ref)
        check_descriptors(ref)
        expected = header.expected_sha256.lower()
        if expected and not _SHA256_HEX.match(expected):
            raise InvalidArgumentError("expected_sha256 must be 64 lowercase hex digits")
        if header.size_hint < 0:
            raise InvalidArgumentError("size_hint must not be negative")
        sending_ae = checked_ae_title(header.sending_ae_title)
        # Fail before writing anything when the write could not be announced anyway.
        self.announcer.check_ready()
        await self.ensure_bucket()

        # Before any byte is written: a write that is never announced (this process dies, or
        # Kafka fails and the sender gives up) is found and announced by the reconciler; and
        # the UID must not belong to another study.
        intent_key = await claim_and_record(
            self.claims, ref, self.intents, Intent("write", object_key(ref), expected)
        )
        try:
            result, received = await self._receive_and_commit(
                ref,
                expected,
                header.size_hint,
                chunks,
                sending_ae=sending_ae,
                refuse_other_bytes=header.refuse_other_bytes,
            )
        except (InvalidArgumentError, AlreadyExistsError):
            self.intents.clear_later(intent_key)  # refused: nothing of it was kept
            raise
        header_part10 = event_header(
            received.prefix, received.size, self.settings.event_header_cap_bytes
        )
        await self.announcer.instance_stored(result.info, result.new_version, header_part10)
        self.intents.clear_later(intent_key)
        log.debug(
            "instance stored",
            extra={
                "object_key": result.info.key,
                "size": result.info.size,
                "version_id": result.info.version_id,
                "already_existed": result.already_existed,
                "new_version": result.new_version,
            },
        )
        return result

    async def _receive_and_commit(
        self,
        ref: instance_pb2.InstanceRef,
        expected: str,
        size_hint: int,
        chunks: AsyncIterator[bytes],
        *,
        sending_ae: str = "",
        refuse_other_bytes: bool = False,
    ) -> tuple[PutResult, ReceivedObject]:
        """Take in the object and make it current (or find it already stored); undo what was
        written if that fails."""
        now = datetime.now(UTC)
        received = await self._receive(ref, expected, size_hint, chunks, now, sending_ae=sending_ae)
        try:
            if expected and received.sha256_hex != expected:
                raise InvalidArgumentError("the bytes received do not match expected_sha256")
            if received.streamed_written:
                info = _object_info(ref, received, now)
                result = PutResult(info, already_existed=False, new_version=False)
            else:
                async with self._locks.hold(object_key(ref)):
                    optimistic = received.streamed is None  # else that was the optimistic write
                    result = await self._commit(ref, received, now, optimistic, refuse_other_bytes)
        except BaseException:
            await asyncio.shield(self._discard(received))
            raise
        return result, received

    async def _receive(
        self,
        ref: instance_pb2.InstanceRef,
        expected: str,
        size_hint: int,
        chunks: AsyncIterator[bytes],
        now: datetime,
        *,
        sending_ae: str = "",
    ) -> ReceivedObject:
        """Take in the Put stream, writing it to S3 meanwhile where that is possible."""
        if expected:
            # The digest is known up front: the object can go straight to its final key with
            # its metadata (multipart: completed only once the digest is confirmed).
            final_key = object_key(ref)
            final_meta = object_metadata(
                ref, expected, new_version_id(now, expected), rfc3339(now), sending_ae
            )
        else:
            final_key, final_meta = staging_key(), {}
        stream_to = self._stream_target(ref, expected, size_hint, final_meta)
        if stream_to is not None:
            self._streamed_puts += 1
        try:
            received = await receive_object(
                chunks,
                bucket=self.bucket,
                policy=self.policy,
                size_hint=size_hint,
                multipart_key=final_key,
                multipart_metadata=final_meta,
                stream_to=stream_to,
                keep_prefix=prefix_to_keep(self.settings.event_header_cap_bytes),
            )
        finally:
            if stream_to is not None:
                self._streamed_puts -= 1
        received.sending_ae_title = sending_ae
        return received

    async def _discard(self, received: ReceivedObject) -> None:
        """Undo what a failed Put wrote."""
        if received.multipart is not None:
            await received.multipart.abort()
        if received.streamed is not None:
            await received.streamed.undo()

    def _stream_target(
        self,
        ref: instance_pb2.InstanceRef,
        expected_sha256: str,
        size_hint: int,
        metadata: dict[str, str],
    ) -> StreamTarget | None:
        """Where to write this Put's object while it arrives, or None to receive it first.

        Only with the size and digest announced (S3 then verifies the whole object), only
        below the multipart threshold (the bytes stay in memory for the fallback) and only
        with conditional writes (``If-None-Match: *``: a stored instance is never replaced
        this way; replacing goes through :meth:`_commit`, which keeps the old version).
        """
        if not (
            expected_sha256
            and self.settings.conditional_writes
            and 0 < size_hint < self.policy.multipart_threshold
            and self._streamed_puts < self.settings.max_streamed_puts
        ):
            return None
        return StreamTarget(
            key=object_key(ref),
            size=size_hint,
            sha256_b64=b64_digest(bytes.fromhex(expected_sha256)),
            metadata=metadata,
            condition={"IfNoneMatch": "*"},
        )

    async def _commit(
        self,
        ref: instance_pb2.InstanceRef,
        received: ReceivedObject,
        now: datetime,
        optimistic: bool,
        refuse_other_bytes: bool = False,
    ) -> PutResult:
        """Make the received object current unless identical bytes already are (or, with
        ``refuse_other_bytes``, unless any other bytes are: then raise AlreadyExistsError).

        With conditional writes the new object is written only if the current one is still
        the one that was read (``IfMatch`` its ETag, or ``IfNoneMatch: *`` when there was
        none), so two replicas replacing one instance at once cannot lose a version: the loser
        reads again and keeps the winner as a version. With ``optimistic`` a small object is
        first written as new, which saves the HEAD in the common case (unless a streamed write
        already tried that).

        An identical object that carries this Put's own version id was not there before this
        Put began: this Put's streamed write stored it though its answer was lost (a dropped
        connection). That is a new object, not ``already_existed``.
        """
        key = object_key(ref)
        sha = received.sha256_hex
        own_version = new_version_id(now, sha)
        conditional = self.settings.conditional_writes
        optimistic = optimistic and conditional and received.data is not None
        for attempt in range(_WRITE_ATTEMPTS):
            current = None if optimistic and attempt == 0 else await self.bucket.head(key)
            if current is not None and current.metadata.get(META_SHA256) == sha:
                if received.multipart is not None:
                    await received.multipart.abort()
                own = current.metadata.get(META_VERSION) == own_version
                return PutResult(
                    object_info(ref, current), already_existed=not own, new_version=False
                )
            if current is not None and refuse_other_bytes:
                raise AlreadyExistsError("SOP Instance UID already stored with other bytes")
            condition: dict[str, str] = {}
            if conditional:
                condition = {"IfMatch": current.etag} if current else {"IfNoneMatch": "*"}
            try:
                if current is not None:
                    await self._keep_as_version(ref, current)
                info = await self._write(ref, received, now, condition)
            except WriteConflictError:
                log.info("instance changed while being replaced; reading it again")
                continue
            return PutResult(info, already_existed=False, new_version=current is not None)
        raise UnavailableError("too many concurrent writes of this instance; retry later")

    async def _write(
        self,
        ref: instance_pb2.InstanceRef,
        received: ReceivedObject,
        now: datetime,
        condition: dict[str, str],
    ) -> instance_pb2.ObjectInfo:
        """Write the received object to its final key with its metadata."""
        key = object_key(ref)
        sha = received.sha256_hex
        version_id = new_version_id(now, sha)
        metadata = object_metadata(ref, sha, version_id, rfc3339(now), received.sending_ae_title)
        expected_b64 = b64_digest(bytes.fromhex(sha))
        upload = received.multipart
        if received.data is not None:
            await self.bucket.put(key, received.data, expected_b64, metadata, condition)
        elif upload is not None and upload.key == key:
            await upload.complete(received.parts, condition)
        elif upload is not None:
            # Staged upload: copying gives the final object its metadata and a full-object
            # SHA-256 computed by S3 (a multipart object only has a checksum of its parts'
            # checksums). CopyObject cannot be conditional: see the README on concurrency.
            await upload.complete(received.parts)
            try:
                checksum = await self.bucket.copy(upload.key, key, metadata)
            finally:
                with contextlib.suppress(PacsError):
                    await self.bucket.delete(upload.key)
            if checksum and checksum != expected_b64:
                log.error(
                    "S3 computed another SHA-256 for a copied object", extra={"object_key": key}
                )
                raise DataLossError("the stored object does not match the bytes received")
        return _object_info(ref, received, now)

    async def _keep_as_version(self, ref: instance_pb2.InstanceRef, current: StoredObject) -> None:
        """Copy the current object to its version key before it is replaced."""
        target = version_key(ref, version_of(current))
        # Only the object that was read may go under its version id: if another writer
        # replaced it meanwhile, the copy fails and the caller reads again.
        source_etag = current.etag if self.settings.conditional_writes else ""
        await self.bucket.copy(current.key, target, metadata=None, source_etag=source_etag)

    # --- Head ----------------------------------------------------------------------------

    async def find(
        self, ref: instance_pb2.InstanceRef, version_id: str = ""
    ) -> tuple[str, StoredObject]:
        """The key and description of the current object or of one version.

        Raises:
            NotFoundError: no such instance or version.
        """
        return await locate(self.bucket, ref, version_id)

    async def head(
        self, ref: instance_pb2.InstanceRef, version_id: str = ""
    ) -> instance_pb2.ObjectInfo:
        """Describe the current object of an instance, or one version."""
        check_instance(ref)
        _, stored = await self.find(ref, version_id)
        return object_info(ref, stored)

    async def open(
        self, ref: instance_pb2.InstanceRef, version_id: str, offset: int, length: int
    ) -> OpenObject:
        """Open an object (or a byte range of it) for reading; see :mod:`pacs_storage.retrieve`."""
        return await open_object(
            self.bucket,
            ref,
            version_id=version_id,
            offset=offset,
            length=length,
            chunk_size=self.settings.chunk_size,
        )

    # --- Delete --------------------------------------------------------------------------

    async def delete(self, ref: instance_pb2.InstanceRef, all_versions: bool) -> int:
        """Remove the current object (and every earlier version if asked); announce it.

        Deleting what is already gone removes nothing and announces again, so a Delete retried
        after Kafka failed still reaches the consumers.
        """
        check_instance(ref)
        self.announcer.check_ready()
        await self.ensure_bucket()
        removed = 0
        kind = "delete-all" if all_versions else "delete"
        intent_key = await self.intents.record(Intent(kind, object_key(ref)))
        async with self._locks.hold(object_key(ref)):
            if await self.bucket.head(object_key(ref)) is not None:
                await self.bucket.delete(object_key(ref))
                removed += 1
            if all_versions:
                removed += await remove_earlier_versions(self.bucket, ref)
                if self.claims is not None:
                    await self.claims.release(ref)
        await self.announcer.instance_deleted(ref, all_versions)
        self.intents.clear_later(intent_key)
        log.info("instance deleted", extra={"versions": removed, "all_versions": all_versions})
        return removed

    # --- List ----------------------------------------------------------------------------

    async def list(
        self, tenant: str, study_uid: str, series_uid: str, page_size: int, page_token: str
    ) -> tuple[list[instance_pb2.ObjectInfo], str]:
        """One page of current objects under a tenant, study or series.

        Listing does not read each object's metadata (that would cost one request per object):
        entries carry the address, key, size and time; Head gives checksum and descriptors.
        Earlier versions are skipped, so a page may hold fewer than ``page_size`` entries.
        """
        if page_size < 0:
            raise InvalidArgumentError("page_size must not be negative")
        prefix = list_prefix(tenant, study_uid, series_uid)
        size = min(page_size or self.settings.list_page_size, 1000)
        await self.ensure_bucket()
        items, next_token = await self.bucket.list(prefix, size, page_token)
        infos = []
        for item in items:
            ref = instance_of_key(item.key)
            if ref is None:
                continue
            infos.append(
                instance_pb2.ObjectInfo(
                    instance=ref,
                    key=item.key,
                    size=item.size,
                    stored_time=rfc3339(item.last_modified),
                )
            )
        return infos, next_token


def _object_info(
    ref: instance_pb2.InstanceRef, received: ReceivedObject, now: datetime
) -> instance_pb2.ObjectInfo:
    """The description of an object just written (its version id as in its metadata)."""
    return instance_pb2.ObjectInfo(
        instance=ref,
        key=object_key(ref),
        size=received.size,
        sha256=received.sha256_hex,
        version_id=new_version_id(now, received.sha256_hex),
        stored_time=rfc3339(now),
        sending_ae_title=received.sending_ae_title,
    )

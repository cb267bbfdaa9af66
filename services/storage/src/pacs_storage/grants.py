"""Write and read grants: in-cluster services move bytes straight to and from S3.

Storage stays the only holder of S3 credentials and the owner of key layout, versions,
integrity and events; it signs requests instead of carrying the bytes (one Python gRPC hop and
one copy of every byte fewer). The rules:

* A **write grant** is a pre-signed PUT of the instance's final key (or one pre-signed part
  PUT per part of a multipart upload that storage opened). Every request signs the SHA-256 the
  writer announced (``x-amz-checksum-sha256``, per part for multipart), so S3 itself refuses
  other bytes; the object's metadata (its SHA-256 and version id) is signed too; and the PUT is
  conditional (``If-None-Match: *``): a grant can create an instance, never replace one. No
  grant is given for a SOP Instance UID that another study holds (ALREADY_EXISTS,
  :mod:`pacs_storage.uid_claims`).
* **CommitWrite** trusts nothing it can read from S3 instead: it completes the multipart upload
  (S3 checks each part's checksum again), then reads the object's first bytes, which also give
  its size and metadata. The object must be the granted one (same SHA-256 and size); it is new
  when it carries this grant's version id, ``already_existed`` when identical bytes were there
  before. Only then is ``InstanceStored`` published (acks=all, with the header cut from the
  bytes just read), exactly as after a Put. An instance already stored with *other* bytes gets
  FAILED_PRECONDITION: replacing keeps the old version, which only ``Put`` does.
* A **read grant** is a pre-signed GET with the SHA-256 from the object's metadata; the reader
  verifies it (:mod:`pacs_common.clients.direct`).

A write that is PUT but never committed (the writer died) is an object nobody announced:
``pacs index check`` finds it, as it finds a Put whose event was lost.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pacs.storage.v1 import storage_service_pb2 as pb
from pacs.type.v1 import instance_pb2
from pacs_common.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)

from pacs_storage.announcer import Announcer
from pacs_storage.bucket import Bucket, ObjectReader, WriteConflictError
from pacs_storage.event_header import event_header, prefix_to_keep
from pacs_storage.intents import Intent, IntentLog
from pacs_storage.keys import check_descriptors, check_instance, object_key
from pacs_storage.retrieve import locate
from pacs_storage.settings import StorageSettings
from pacs_storage.uid_claims import UidClaims, claim_and_record
from pacs_storage.versions import (
    META_SHA256,
    META_VERSION,
    b64_digest,
    checked_ae_title,
    new_version_id,
    object_info,
    object_metadata,
    rfc3339,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
S3_MIN_PART = 5 * 1024 * 1024
# First bytes read at commit: a CT or MR header is 2-20 KiB; longer ones cost a second read.
_FIRST_READ = 64 * 1024
S3_MAX_PARTS = 10_000


@dataclass(frozen=True)
class CommitResult:
    """Outcome of one CommitWrite (what Put answers)."""

    info: instance_pb2.ObjectInfo
    already_existed: bool


class Grants:
    """Issues write and read grants for one bucket and commits granted writes."""

    def __init__(
        self,
        bucket: Bucket,
        announcer: Announcer,
        intents: IntentLog,
        settings: StorageSettings,
        claims: UidClaims | None = None,
    ) -> None:
        self.bucket = bucket
        self.announcer = announcer
        self.intents = intents
        self.settings = settings
        self.claims = claims

    # --- write ---------------------------------------------------------------------------

    async def grant_write(self, request: pb.GrantWriteRequest) -> pb.GrantWriteResponse:
        """Signed PUTs for one new object (see the module docstring).

        Raises:
            InvalidArgumentError: bad address, size, checksum or part layout.
            UnavailableError: Kafka is down (the write could not be announced) or S3 is.
        """
        ref = request.instance
        check_instance(ref)
        check_descriptors(ref)
        sha = _checked_sha(request.sha256, "sha256")
        if not 0 < request.size <= self.settings.max_object_size:
            raise InvalidArgumentError(
                f"size must be between 1 and {self.settings.max_object_size} bytes"
            )
        # Refuse before any byte moves when the commit could not be announced anyway.
        self.announcer.check_ready()
        now = datetime.now(UTC)
        version_id = new_version_id(now, sha)
        metadata = object_metadata(
            ref, sha, version_id, rfc3339(now), checked_ae_title(request.sending_ae_title)
        )
        key = object_key(ref)
        expires_s = self.settings.grant_ttl_s
        token = pb.WriteGrantToken(version_id=version_id)
        if not request.part_sha256:
            headers = {
                "Content-Length": str(request.size),
                "Content-Type": "application/dicom",
                "x-amz-checksum-sha256": b64_digest(bytes.fromhex(sha)),
                "If-None-Match": "*",
                **{f"x-amz-meta-{name}": value for name, value in metadata.items()},
                **self.bucket.sse_headers,
            }
            url, headers = self.bucket.presign("PUT", key, headers, expires_s)
            requests = [pb.SignedRequest(method="PUT", url=url, headers=headers)]
        else:
            part_shas = _checked_parts(request)
            if self.claims is not None:
                await self.claims.claim(ref)  # before the upload is opened
            upload_id = await self.bucket.create_multipart(key, metadata)
            token.upload_id = upload_id
            token.part_sha256.extend(part_shas)
            requests = []
            for number, part_sha in enumerate(part_shas, start=1):
                offset = (number - 1) * request.part_size
                length = min(request.part_size, request.size - offset)
                url, headers = self.bucket.presign(
                    "PUT",
                    key,
                    {
                        "Content-Length": str(length),
                        "x-amz-checksum-sha256": b64_digest(bytes.fromhex(part_sha)),
                    },
                    expires_s,
                    {"partNumber": str(number), "uploadId": upload_id},
                )
                requests.append(
                    pb.SignedRequest(
                        method="PUT", url=url, headers=headers, offset=offset, length=length
                    )
                )
        # Before any byte can move: a write whose commit never comes is then still found and
        # announced by the reconciler (pacs_storage.intents).
        token.intent_key = await claim_and_record(
            None if token.upload_id else self.claims,
            ref,
            self.intents,
            Intent("write", key, sha, version_id, token.upload_id),
        )
        return pb.GrantWriteResponse(
            requests=requests,
            grant_token=token.SerializeToString(),
            expire_time=rfc3339(now + timedelta(seconds=expires_s)),
        )

    async def commit_write(self, request: pb.CommitWriteRequest) -> CommitResult:
        """Check a granted write and announce it; see the module docstring.

        Raises:
            InvalidArgumentError: bad request or token.
            FailedPreconditionError: nothing was uploaded for this grant, or the instance is
                stored with other bytes (write it through Put to keep the old version).
            DataLossError, UnavailableError: S3 or Kafka failures.
        """
        ref = request.instance
        check_instance(ref)
        check_descriptors(ref)
        sha = _checked_sha(request.sha256, "sha256")
        token = _parsed_token(request.grant_token)
        self.announcer.check_ready()
        key = object_key(ref)
        if token.upload_id:
            await self._complete(key, token)
        reader, header = await self._read_header(key)
        stored = reader.info
        if stored.metadata.get(META_SHA256) != sha or reader.total_size != request.size:
            raise FailedPreconditionError(
                "the instance is stored with other bytes: write it through Put, which keeps "
                "the stored version"
            )
        already_existed = stored.metadata.get(META_VERSION) != token.version_id
        info = object_info(ref, stored, size=reader.total_size)
        await self.announcer.instance_stored(info, False, header)
        self.intents.clear_later(token.intent_key)
        return CommitResult(info, already_existed)

    async def _read_header(self, key: str) -> tuple[ObjectReader, bytes]:
        """The object's description (size, metadata) and the header for its event, from a
        ranged GET of its first bytes: a short one first (most headers are a few KiB), the
        whole cap only when the header goes on beyond it.

        Raises:
            FailedPreconditionError: there is no object (nothing was uploaded).
        """
        cap = self.settings.event_header_cap_bytes
        keep = prefix_to_keep(cap)
        reader, prefix = await self._read_prefix(key, min(keep, _FIRST_READ) or 1)
        header = event_header(prefix, reader.total_size, cap)
        part10 = prefix[128:132] == b"DICM"  # PS3.10 7.1: only Part 10 objects carry a header
        if part10 and not header and len(prefix) < min(keep, reader.total_size):
            reader, prefix = await self._read_prefix(key, keep)
            header = event_header(prefix, reader.total_size, cap)
        return reader, header

    async def _read_prefix(self, key: str, size: int) -> tuple[ObjectReader, bytes]:
        try:
            reader = await self.bucket.open(key, 0, size - 1)
        except NotFoundError:
            raise FailedPreconditionError(
                "nothing was uploaded for this grant: send its requests, then commit"
            ) from None
        try:
            return reader, await _read_all(reader, size)
        finally:
            reader.close()

    async def _complete(self, key: str, token: pb.WriteGrantToken) -> None:
        """Assemble a granted multipart upload (a retried commit finds it completed)."""
        try:
            uploaded = await self.bucket.list_parts(key, token.upload_id)
        except NotFoundError:
            return  # completed by an earlier commit (or aborted): the object decides
        if len(uploaded) != len(token.part_sha256):
            raise FailedPreconditionError(
                f"{len(uploaded)} of {len(token.part_sha256)} parts were uploaded; send them all"
            )
        parts: list[CompletedPartTypeDef] = [
            {
                "PartNumber": part["PartNumber"],
                "ETag": part["ETag"],
                "ChecksumSHA256": b64_digest(bytes.fromhex(token.part_sha256[index])),
            }
            for index, part in enumerate(uploaded)
        ]
        try:
            await self.bucket.complete_multipart(
                key,
                token.upload_id,
                parts,
                {"IfNoneMatch": "*"},
            )
        except WriteConflictError:
            # The instance exists already: the object read next says whether it is these bytes.
            await self.bucket.abort_multipart(key, token.upload_id)

    # --- read ----------------------------------------------------------------------------

    async def grant_read(self, request: pb.GrantReadRequest) -> pb.GrantReadResponse:
        """A signed GET of the current object or one version, with its SHA-256.

        Raises:
            NotFoundError: no such instance or version.
        """
        ref = request.instance
        check_instance(ref)
        key, stored = await locate(self.bucket, ref, request.version_id)
        expires_s = self.settings.grant_ttl_s
        url, headers = self.bucket.presign("GET", key, {}, expires_s)
        now = datetime.now(UTC)
        return pb.GrantReadResponse(
            object=object_info(ref, stored),
            request=pb.SignedRequest(method="GET", url=url, headers=headers),
            expire_time=rfc3339(now + timedelta(seconds=expires_s)),
        )


def _checked_sha(value: str, name: str) -> str:
    sha = value.lower()
    if not _SHA256_HEX.match(sha):
        raise InvalidArgumentError(f"{name} must be 64 hex digits")
    return sha


def _checked_parts(request: pb.GrantWriteRequest) -> list[str]:
    """The part checksums of a multipart grant, checked against its size and part size."""
    if request.part_size < S3_MIN_PART:
        raise InvalidArgumentError(f"part_size must be at least {S3_MIN_PART} bytes")
    count = math.ceil(request.size / request.part_size)
    if count > S3_MAX_PARTS:
        raise InvalidArgumentError(f"at most {S3_MAX_PARTS} parts: choose a larger part_size")
    if len(request.part_sha256) != count:
        raise InvalidArgumentError(
            f"{count} parts of {request.part_size} bytes make this object: send one "
            "part_sha256 each"
        )
    return [_checked_sha(value, "part_sha256") for value in request.part_sha256]


def _parsed_token(raw: bytes) -> pb.WriteGrantToken:
    token = pb.WriteGrantToken()
    try:
        token.ParseFromString(raw)
    except Exception as exc:  # protobuf raises DecodeError, a plain Exception subclass
        raise InvalidArgumentError("grant_token is not one this service issued") from exc
    if not token.version_id:
        raise InvalidArgumentError("grant_token is not one this service issued")
    return token


async def _read_all(reader: ObjectReader, size: int) -> bytes:
    """Up to ``size`` first bytes of an open object."""
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = await reader.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)

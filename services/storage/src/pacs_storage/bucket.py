"""Asynchronous access to the one S3 bucket, with S3 failures turned into domain errors.

boto3 is synchronous, so every request runs in a worker thread (``asyncio.to_thread``) and the
event loop keeps serving other calls meanwhile. Each request is timed
(``pacs_s3_request_duration_seconds``) and its failure, after botocore's own retries
(standard mode, see :func:`pacs_common.s3.make_s3_client`), mapped once, here:

* connection refused, timeouts, 5xx, throttling, checksum mismatch in transit -> UNAVAILABLE
  (retriable: the gateway answers "out of resources" and the sender tries again);
* missing key -> NOT_FOUND; unsatisfiable range -> INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import quote

import grpc
import urllib3
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError
from pacs_common.errors import (
    InvalidArgumentError,
    NotFoundError,
    PacsError,
    UnavailableError,
)
from pacs_common.metrics import S3_ERRORS, S3_REQUEST_DURATION
from pacs_common.settings import S3Settings

from pacs_storage.signed_http import S3ConnectionError, S3RefusedError, SignedS3Requests

if TYPE_CHECKING:
    from hashlib import _Hash as Hash

    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, ObjectIdentifierTypeDef

T = TypeVar("T")

_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}
_RETRIABLE = {
    "BadDigest",  # the bytes changed on the way to S3
    "XAmzContentSHA256Mismatch",
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "NoSuchBucket",  # not created yet, or removed under us: nothing to do but wait
    "AccessDenied",  # credentials or policy misconfigured: an operator must act
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
}


class ReadableBody(Protocol):
    """A request body botocore reads in its worker thread (see ``streamed_put``)."""

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes, b"" at the end."""
        ...


@dataclass(frozen=True)
class StoredObject:
    """What S3 tells about one object (HEAD or GET response)."""

    key: str
    size: int
    etag: str
    metadata: Mapping[str, str]
    last_modified: datetime | None
    checksum_sha256: str | None


@dataclass(frozen=True)
class ListedObject:
    """One entry of a listing."""

    key: str
    size: int
    last_modified: datetime


class ObjectReader:
    """An open GET: object description plus its body, read chunk by chunk in a thread."""

    def __init__(self, info: StoredObject, total_size: int, body: Any) -> None:
        self.info = info
        self.total_size = total_size
        self._body = body

    async def read(self, size: int, digest: Hash | None = None) -> bytes:
        """Up to ``size`` bytes; b"" at the end. ``digest`` is updated with them in the worker
        thread (hashlib releases the GIL), off the event loop."""

        def read() -> bytes:
            data: bytes = self._body.read(size)
            if digest is not None:
                digest.update(data)
            return data

        try:
            data = await asyncio.to_thread(read)
        except (
            BotoConnectionError,
            HTTPClientError,
            IncompleteReadError,
            urllib3.exceptions.HTTPError,
            OSError,
        ) as exc:
            raise UnavailableError(f"S3 read interrupted: {type(exc).__name__}") from exc
        return data

    def close(self) -> None:
        """Release the HTTP connection."""
        self._body.close()


class WriteConflictError(PacsError):
    """A conditional write lost a race: the object changed since it was read."""

    code = grpc.StatusCode.ABORTED
    retriable = True


def _error_for(operation: str, exc: Exception) -> PacsError:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        return _error_for_answer(operation, code, status)
    if isinstance(exc, S3RefusedError):
        return _error_for_answer(operation, exc.code, exc.status)
    return UnavailableError(f"S3 unreachable during {operation}: {type(exc).__name__}")


def _error_for_answer(operation: str, code: str, status: int) -> PacsError:
    """The domain error for S3's error ``code`` (the status as text when the answer had no
    body, as for HEAD; a missing bucket is NoSuchBucket, retriable, not a missing object)."""
    if code in {"PreconditionFailed", "ConditionalRequestConflict", "412"}:
        return WriteConflictError("the object changed while it was being replaced")
    if code in _NOT_FOUND:
        return NotFoundError("object not found")
    if code == "InvalidRange":
        return InvalidArgumentError("the requested range is outside the object")
    if code in _RETRIABLE or status >= 500:
        return UnavailableError(f"S3 {operation} failed: {code or status}")
    return PacsError(f"S3 {operation} failed: {code or status}")


_VERSIONING_TTL_S = 60.0


class Bucket:
    """The service's bucket, addressed through one boto3 client (thread-safe)."""

    def __init__(
        self,
        client: S3Client,
        settings: S3Settings,
        sse: Mapping[str, str],
        presign_endpoint: str | None = None,
    ) -> None:
        """Args:
        presign_endpoint: the S3 endpoint written into grants, when writers reach S3 under
            another address than this service does (the host is part of the signature).
        """
        self.client = client
        self.name = settings.bucket
        self._versioning: tuple[float, bool] | None = None  # (checked at, on)
        self._sse = dict(sse)
        self._presign_endpoint = (presign_endpoint or settings.endpoint).rstrip("/")
        self._region = settings.region
        self._credentials = Credentials(
            settings.access_key.get_secret_value(), settings.secret_key.get_secret_value()
        )
        # Single-object requests of the write path, at half boto3's CPU (see signed_http).
        self._signed = SignedS3Requests(settings, self.name)
        self._kept_folders: set[str] = set()

    async def _call(self, operation: str, fn: Callable[..., T], **kwargs: Any) -> T:
        started = time.perf_counter()
        try:
            return await asyncio.to_thread(fn, **kwargs)
        except (
            ClientError,
            BotoConnectionError,
            HTTPClientError,
            S3RefusedError,
            S3ConnectionError,
        ) as exc:
            S3_ERRORS.labels(operation).inc()
            raise _error_for(operation, exc) from exc
        finally:
            S3_REQUEST_DURATION.labels(operation).observe(time.perf_counter() - started)

    async def ensure_exists(self) -> bool:
        """Create the bucket when it is missing; True if it was created."""
        try:
            await self._call("head_bucket", self.client.head_bucket, Bucket=self.name)
            return False
        except NotFoundError:
            pass
        try:
            await self._call("create_bucket", self.client.create_bucket, Bucket=self.name)
        except PacsError:
            # Another replica may have created it meanwhile; HEAD decides.
            await self._call("head_bucket", self.client.head_bucket, Bucket=self.name)
        return True

    async def head(self, key: str) -> StoredObject | None:
        """Describe one object, or None when it does not exist."""
        try:
            response = await self._call(
                "head_object",
                self._signed.send,
                method="HEAD",
                key=key,
                headers={"x-amz-checksum-mode": "ENABLED"},
            )
        except NotFoundError:
            return None
        return _described(key, response.headers)

    async def put(
        self,
        key: str,
        data: bytes | ReadableBody,
        sha256_b64: str,
        metadata: Mapping[str, str],
        condition: Mapping[str, str] | None = None,
        *,
        size: int | None = None,
    ) -> StoredObject:
        """Write one object in one request; S3 verifies ``sha256_b64`` before storing it.

        ``data`` is the object, or a body read while the request is sent, then ``size`` is
        its length. ``condition`` (``IfNoneMatch``/``IfMatch``) makes the write conditional;
        a lost race raises :class:`WriteConflictError`.
        """
        if isinstance(data, bytes):
            return await self._put_bytes(key, data, sha256_b64, metadata, condition)
        if size is None:
            raise ValueError("a streamed body needs its size")
        response = await self._call(
            "put_object",
            self.client.put_object,
            Bucket=self.name,
            Key=key,
            Body=data,
            ContentLength=size,
            ChecksumSHA256=sha256_b64,
            Metadata=dict(metadata),
            ContentType="application/dicom",
            **self._sse,
            **dict(condition or {}),
        )
        return StoredObject(
            key=key,
            size=size,
            etag=str(response.get("ETag", "")),
            metadata=dict(metadata),
            last_modified=None,
            checksum_sha256=response.get("ChecksumSHA256"),
        )

    async def _put_bytes(
        self,
        key: str,
        data: bytes,
        sha256_b64: str,
        metadata: Mapping[str, str],
        condition: Mapping[str, str] | None,
    ) -> StoredObject:
        headers = {
            "Content-Type": "application/dicom",
            "x-amz-checksum-sha256": sha256_b64,
            **{f"x-amz-meta-{name}": value for name, value in metadata.items()},
            **self.sse_headers,
            **{_CONDITION_HEADERS[name]: value for name, value in (condition or {}).items()},
        }
        response = await self._call(
            "put_object", self._signed.send, method="PUT", key=key, headers=headers, body=data
        )
        return StoredObject(
            key=key,
            size=len(data),
            etag=str(response.headers.get("ETag", "")),
            metadata=dict(metadata),
            last_modified=None,
            checksum_sha256=response.headers.get("x-amz-checksum-sha256"),
        )

    async def keep_folder(self, prefix: str) -> None:
        """Make sure the flat folder ``prefix`` is never empty (once per process).

        A POSIX-backed S3 server (versitygw) removes a folder emptied by a delete, and a write
        into it at that moment fails; a permanent ``~sentinel`` object keeps the folder.
        """
        if prefix in self._kept_folders:
            return
        await self._put_bytes(f"{prefix}~sentinel", b"", _EMPTY_SHA256_B64, {}, None)
        self._kept_folders.add(prefix)

    async def create_multipart(self, key: str, metadata: Mapping[str, str]) -> str:
        """Open a multipart upload with per-part SHA-256 checksums; returns its upload id."""
        response = await self._call(
            "create_multipart_upload",
            self.client.create_multipart_upload,
            Bucket=self.name,
            Key=key,
            ChecksumAlgorithm="SHA256",
            Metadata=dict(metadata),
            ContentType="application/dicom",
            **self._sse,
        )
        return response["UploadId"]

    async def upload_part(
        self, key: str, upload_id: str, number: int, data: bytes, sha256_b64: str
    ) -> CompletedPartTypeDef:
        """Upload one part; S3 verifies its checksum."""
        response = await self._call(
            "upload_part",
            self.client.upload_part,
            Bucket=self.name,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            ChecksumSHA256=sha256_b64,
        )
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": sha256_b64}

    async def complete_multipart(
        self,
        key: str,
        upload_id: str,
        parts: list[CompletedPartTypeDef],
        condition: Mapping[str, str] | None = None,
    ) -> None:
        """Assemble the parts into the object (conditionally, like :meth:`put`)."""
        await self._call(
            "complete_multipart_upload",
            self.client.complete_multipart_upload,
            Bucket=self.name,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
            **dict(condition or {}),
        )

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Discard an unfinished upload (best effort: a lifecycle rule catches leftovers)."""
        with contextlib.suppress(PacsError):
            await self._call(
                "abort_multipart_upload",
                self.client.abort_multipart_upload,
                Bucket=self.name,
                Key=key,
                UploadId=upload_id,
            )

    async def copy(
        self,
        source: str,
        key: str,
        metadata: Mapping[str, str] | None,
        source_etag: str = "",
    ) -> str | None:
        """Server-side copy; ``metadata`` replaces the source's when given; with
        ``source_etag`` only if the source is still that object (else WriteConflictError).

        S3 computes a full-object SHA-256 of the copy (``ChecksumAlgorithm``), also when the
        source was a multipart upload; it is returned (base64) for the caller to compare.
        """
        extra: dict[str, Any] = dict(self._sse)
        if source_etag:
            extra["CopySourceIfMatch"] = source_etag
        if metadata is not None:
            extra["Metadata"] = dict(metadata)
            extra["MetadataDirective"] = "REPLACE"
            extra["ContentType"] = "application/dicom"
        response = await self._call(
            "copy_object",
            self.client.copy_object,
            Bucket=self.name,
            Key=key,
            CopySource={"Bucket": self.name, "Key": source},
            ChecksumAlgorithm="SHA256",
            **extra,
        )
        return response.get("CopyObjectResult", {}).get("ChecksumSHA256")

    async def open(self, key: str, first: int = 0, last: int | None = None) -> ObjectReader:
        """Start reading an object, optionally bytes ``first..last`` (inclusive)."""
        headers: dict[str, str] = {}
        if first or last is not None:
            headers["Range"] = f"bytes={first}-{'' if last is None else last}"
        response = await self._call(
            "get_object", self._signed.send, method="GET", key=key, headers=headers, stream=True
        )
        info = _described(key, response.headers)
        total = info.size
        content_range = str(response.headers.get("Content-Range", ""))
        if "/" in content_range:
            total = int(content_range.rsplit("/", 1)[1])
        return ObjectReader(info, total, _ResponseBody(response))

    def presign(
        self,
        method: str,
        key: str,
        headers: Mapping[str, str],
        expires_s: int,
        query: Mapping[str, str] | None = None,
    ) -> tuple[str, dict[str, str]]:
        """A pre-signed request (SigV4 in the query string) for ``key`` of this bucket: its
        URL and the headers that are part of its signature (the caller must send them).

        botocore's signer class signs it; the client's ``generate_presigned_url`` would do the
        same through its whole request pipeline at ten times the CPU (about 5 ms against 0.5 ms
        per grant here), on the hot path of every C-STORE. ``Content-Length`` is signed but
        left to the HTTP client, which sends the body's.
        """
        url = f"{self._presign_endpoint}/{self.name}/{quote(key, safe='/')}"
        request = AWSRequest(
            method=method, url=url, headers=dict(headers), params=dict(query or {})
        )
        S3SigV4QueryAuth(self._credentials, "s3", self._region, expires=expires_s).add_auth(request)
        signed = {
            name: str(value)
            for name, value in request.headers.items()
            if name.lower() != "content-length"
        }
        return str(request.url), signed

    @property
    def sse_headers(self) -> dict[str, str]:
        """The server-side encryption request headers a signed PUT must carry."""
        names = {
            "ServerSideEncryption": "x-amz-server-side-encryption",
            "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id",
        }
        return {names[name]: value for name, value in self._sse.items() if name in names}

    async def list_parts(self, key: str, upload_id: str) -> list[CompletedPartTypeDef]:
        """The parts uploaded so far (number, ETag, SHA-256), in order.

        Raises:
            NotFoundError: no such upload (never begun, completed or aborted).
        """
        parts: list[CompletedPartTypeDef] = []
        marker = 0
        while True:
            response = await self._call(
                "list_parts",
                self.client.list_parts,
                Bucket=self.name,
                Key=key,
                UploadId=upload_id,
                PartNumberMarker=marker,
            )
            for part in response.get("Parts", []):
                parts.append(
                    {
                        "PartNumber": part["PartNumber"],
                        "ETag": part["ETag"],
                        "ChecksumSHA256": part.get("ChecksumSHA256", ""),
                    }
                )
            if not response.get("IsTruncated"):
                return parts
            marker = int(response.get("NextPartNumberMarker", 0))

    async def delete_many(self, keys: list[str]) -> None:
        """Remove up to 1000 objects in one request (missing ones are no error)."""
        await self._call(
            "delete_objects",
            self.client.delete_objects,
            Bucket=self.name,
            Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
        )

    async def delete(self, key: str) -> None:
        """Remove one object (no error if it is already gone)."""
        await self._call("delete_object", self._signed.send, method="DELETE", key=key)

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix``; returns how many there were."""
        removed = 0
        token = ""
        while True:
            items, token = await self.list(prefix, 1000, token)
            for item in items:
                await self.delete(item.key)
                removed += 1
            if not token:
                return removed

    async def versioning(self) -> bool:
        """Whether S3 versioning is on (or suspended: noncurrent versions may remain) for the
        bucket; asked at most once a minute. An answer that is not a clear "never configured"
        counts as on, so that a deletion of every version looks for S3's versions."""
        now = time.monotonic()
        if self._versioning is not None and now - self._versioning[0] < _VERSIONING_TTL_S:
            return self._versioning[1]
        try:
            response = await self._call(
                "get_bucket_versioning", self.client.get_bucket_versioning, Bucket=self.name
            )
            on = bool(response.get("Status"))
        except PacsError as exc:
            cause = exc.__cause__
            code = (
                cause.response.get("Error", {}).get("Code")
                if isinstance(cause, ClientError)
                else ""
            )
            on = code != "VersioningNotConfigured"  # versitygw without --versioning-dir
        self._versioning = (now, on)
        return on

    async def purge_versions(self, prefix: str, key: str = "") -> int:
        """Remove every S3 object version and delete marker under ``prefix`` (only of ``key``
        when given); returns how many.

        Storage keeps its own versions (:mod:`pacs_storage.versions`), but operators may also
        turn on S3 bucket versioning (docs/operations.md, Backups): a DeleteObject then only
        adds a delete marker and the bytes stay as noncurrent versions. A deletion of every
        version must remove those too. On a bucket without versioning the listing holds only
        current objects, which the caller has already removed: nothing is sent.
        """
        removed = 0
        markers: dict[str, str] = {}
        while True:
            response = await self._call(
                "list_object_versions",
                self.client.list_object_versions,
                Bucket=self.name,
                Prefix=prefix,
                **markers,
            )
            found: list[ObjectIdentifierTypeDef] = [
                {"Key": item["Key"], "VersionId": item["VersionId"]}
                for item in [*response.get("Versions", []), *response.get("DeleteMarkers", [])]
                if "Key" in item and "VersionId" in item and (not key or item["Key"] == key)
            ]
            if found:
                result = await self._call(
                    "delete_objects",
                    self.client.delete_objects,
                    Bucket=self.name,
                    Delete={"Objects": found, "Quiet": True},
                )
                if result.get("Errors"):
                    S3_ERRORS.labels("delete_objects").inc()
                    raise UnavailableError("S3 refused to remove some object versions; retry")
                removed += len(found)
            if not response.get("IsTruncated"):
                return removed
            markers = {
                "KeyMarker": response.get("NextKeyMarker", ""),
                "VersionIdMarker": response.get("NextVersionIdMarker", ""),
            }

    async def list(
        self, prefix: str, max_keys: int, token: str = ""
    ) -> tuple[list[ListedObject], str]:
        """One page of keys under ``prefix`` and the token of the next page ("" at the end)."""
        extra: dict[str, Any] = {"ContinuationToken": token} if token else {}
        response = await self._call(
            "list_objects_v2",
            self.client.list_objects_v2,
            Bucket=self.name,
            Prefix=prefix,
            MaxKeys=max_keys,
            **extra,
        )
        items = [
            ListedObject(key=item["Key"], size=item["Size"], last_modified=item["LastModified"])
            for item in response.get("Contents", [])
        ]
        truncated = response.get("IsTruncated", False)
        next_token = response.get("NextContinuationToken", "") if truncated else ""
        return items, next_token


_EMPTY_SHA256_B64 = base64.b64encode(hashlib.sha256(b"").digest()).decode()
_CONDITION_HEADERS = {"IfNoneMatch": "If-None-Match", "IfMatch": "If-Match"}
_META_PREFIX = "x-amz-meta-"


class _ResponseBody:
    """An open GET response read like botocore's streaming body."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response

    def read(self, size: int = -1) -> bytes:
        return self._response.read(None if size < 0 else size)

    def close(self) -> None:
        # A body read only in part is dropped with its connection rather than drained (a
        # reader that stops early may leave gigabytes); the pool reconnects it when reused.
        if self._response.length_remaining:
            self._response.close()
        self._response.release_conn()


def _described(key: str, headers: Mapping[str, str]) -> StoredObject:
    """What a GET or HEAD response's headers tell about the object."""
    modified = headers.get("Last-Modified")
    return StoredObject(
        key=key,
        size=int(headers.get("Content-Length", 0)),
        etag=str(headers.get("ETag", "")),
        metadata={
            name[len(_META_PREFIX) :].lower(): value
            for name, value in headers.items()
            if name.lower().startswith(_META_PREFIX)
        },
        last_modified=parsedate_to_datetime(modified) if modified else None,
        checksum_sha256=headers.get("x-amz-checksum-sha256"),
    )

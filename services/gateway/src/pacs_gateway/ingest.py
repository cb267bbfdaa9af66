"""Taking in one Part 10 object: check its identifiers, then hand it to storage.

Shared by C-STORE and ``IngestService.Store``. The rule of both: an object is reported stored
only after storage's ``CommitWrite`` (objects in memory go straight to S3 through a write
grant) or ``Put`` (streamed ones) returned, which means it is durable in S3 with its verified
SHA-256 and ``InstanceStored`` was acknowledged by Kafka. Nothing here decodes pixel data: the
header is read with ``stop_before_pixels`` and the bytes are stored exactly as received.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from pacs.storage.v1 import storage_service_pb2 as storage_pb
from pacs.type.v1 import instance_pb2
from pacs_common.clients.errors import from_exception
from pacs_common.dicom import instance_ref_of
from pacs_common.errors import AlreadyExistsError, FailedPreconditionError, PacsError

from pacs_gateway.duplicates import DuplicateInstanceError


class InstanceStore(Protocol):
    """What the gateway needs from the storage service's streaming Put (a
    :class:`pacs_common.clients.storage.StorageClient`)."""

    async def put(
        self,
        instance: instance_pb2.InstanceRef,
        data: bytes | AsyncIterator[bytes],
        *,
        size_hint: int = 0,
        expected_sha256: str = "",
        sending_ae_title: str = "",
        refuse_other_bytes: bool = False,
    ) -> storage_pb.PutResponse: ...


@dataclass(frozen=True)
class StoredInstance:
    """The outcome of a successful store."""

    object: instance_pb2.ObjectInfo
    already_present: bool
    new_version: bool = False
    """Other bytes were stored for this instance before; these are its new current version."""


class StoreResponse(Protocol):
    """What both ways of writing answer (``PutResponse``, ``CommitWriteResponse``)."""

    @property
    def object(self) -> instance_pb2.ObjectInfo: ...

    @property
    def already_existed(self) -> bool: ...

    @property
    def new_version(self) -> bool: ...


class GrantedStore(Protocol):
    """Writes through storage's grants, straight to S3
    (:class:`pacs_common.clients.direct.DirectStorage`)."""

    async def put(
        self,
        instance: instance_pb2.InstanceRef,
        data: bytes,
        *,
        sha256: str = "",
        sending_ae_title: str = "",
        new_version_allowed: bool = True,
    ) -> storage_pb.CommitWriteResponse: ...


class DuplicateCheck(Protocol):
    """The duplicate rules (:class:`pacs_gateway.duplicates.DuplicateGuard`)."""

    async def check(self, instance: instance_pb2.InstanceRef, sha256: str | None) -> None: ...

    def refuses_new_versions(self, tenant: str) -> bool: ...


class RecentInstances:
    """The addresses of the instances this process stored lately (bounded, thread-safe).

    Storage Commitment requests name instances by SOP Instance UID only; remembering where
    they were stored answers most of them without waiting for the index to catch up.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._refs: OrderedDict[tuple[str, str], instance_pb2.InstanceRef] = OrderedDict()

    def add(self, ref: instance_pb2.InstanceRef) -> None:
        """Remember ``ref`` (the oldest entry goes when full)."""
        with self._lock:
            self._refs[(ref.tenant, ref.sop_instance_uid)] = ref
            self._refs.move_to_end((ref.tenant, ref.sop_instance_uid))
            while len(self._refs) > self._capacity:
                self._refs.popitem(last=False)

    def get(self, tenant: str, sop_instance_uid: str) -> instance_pb2.InstanceRef | None:
        """The address of a recently stored instance of ``tenant``."""
        with self._lock:
            return self._refs.get((tenant, sop_instance_uid))


class Ingest:
    """Stores checked objects through the storage service."""

    def __init__(
        self,
        store: InstanceStore,
        timeout_s: float,
        recent: RecentInstances | None = None,
        duplicates: DuplicateCheck | None = None,
        granted: GrantedStore | None = None,
    ) -> None:
        """Args:
        store: storage's streaming Put (objects that arrive as a stream, and all objects
            without ``granted``).
        granted: writes through grants, for objects held in memory (C-STORE).
        """
        self._store = store
        self._granted = granted
        self._timeout_s = timeout_s
        self.recent = recent if recent is not None else RecentInstances()
        self._duplicates = duplicates

    async def put(
        self,
        instance: instance_pb2.InstanceRef,
        part10: bytes | AsyncIterator[bytes],
        *,
        size: int = 0,
        sha256: str = "",
        sending_ae_title: str = "",
    ) -> StoredInstance:
        """Store ``part10`` (bytes, or chunks of ``size`` bytes with digest ``sha256``) under
        ``instance``, recording the calling AE title that delivered it (C-STORE); returns only
        once storage made it durable.

        Raises:
            UnavailableError: storage (or its S3/Kafka) is unreachable: retry later.
            PacsError: storage refused the object.
        """
        refuse_new_version = self._duplicates is not None and (
            self._duplicates.refuses_new_versions(instance.tenant)
        )
        try:
            if self._duplicates is not None:
                digest = sha256 or (
                    hashlib.sha256(part10).hexdigest() if isinstance(part10, bytes) else None
                )
                await asyncio.wait_for(self._duplicates.check(instance, digest), self._timeout_s)
                sha256 = digest or ""
            writing: Awaitable[StoreResponse]
            if self._granted is not None and isinstance(part10, bytes):
                writing = self._granted.put(
                    instance,
                    part10,
                    sha256=sha256,
                    sending_ae_title=sending_ae_title,
                    new_version_allowed=not refuse_new_version,
                )
            else:
                writing = self._store.put(
                    instance,
                    part10,
                    size_hint=size,
                    expected_sha256=sha256,
                    sending_ae_title=sending_ae_title,
                    refuse_other_bytes=refuse_new_version,
                )
            response: StoreResponse = await asyncio.wait_for(writing, self._timeout_s)
        except FailedPreconditionError as exc:
            if refuse_new_version:
                # Other bytes reached S3 first, after the rules' HEAD had found nothing (two
                # senders at the same moment): the grant's create-only PUT settled it.
                raise DuplicateInstanceError(
                    "SOP Instance UID already stored with other bytes"
                ) from exc
            raise
        except DuplicateInstanceError:
            raise
        except AlreadyExistsError as exc:
            # Storage's own check (pacs_storage.uid_claims; or refuse_other_bytes through the
            # streamed Put): another study holds the UID, or other bytes are stored.
            raise DuplicateInstanceError(exc.message) from exc
        except PacsError:
            raise
        except Exception as exc:
            raise from_exception(exc, "storage") from exc
        self.recent.add(instance)
        return StoredInstance(
            object=response.object,
            already_present=response.already_existed,
            new_version=response.new_version,
        )

    async def store(self, tenant: str, part10: bytes) -> StoredInstance:
        """Check and store one Part 10 object (the header is parsed in a worker thread).

        Raises:
            InvalidArgumentError: the object cannot be addressed (see :func:`instance_ref_of`).
            UnavailableError, PacsError: as :meth:`put`.
        """
        instance = await asyncio.to_thread(instance_ref_of, part10, tenant)
        return await self.put(instance, part10)

    async def store_file(
        self, tenant: str, spool: BinaryIO, size: int, sha256: str
    ) -> StoredInstance:
        """Check and store one Part 10 object held in a seekable file (``IngestService``'s
        spool): the identifiers are read from the file, skipping every other value, and the
        bytes go to storage in chunks, so memory stays bounded whatever the object's size.

        Raises:
            InvalidArgumentError: the object cannot be addressed (see :func:`instance_ref_of`).
            UnavailableError, PacsError: as :meth:`put`.
        """

        def address() -> instance_pb2.InstanceRef:
            spool.seek(0)
            return instance_ref_of(spool, tenant)

        instance = await asyncio.to_thread(address)
        return await self.put(instance, _chunks_of(spool), size=size, sha256=sha256)


async def _chunks_of(spool: BinaryIO, chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """The file's bytes from its start, read in a worker thread chunk by chunk."""

    def read_from(offset: int) -> bytes:
        spool.seek(offset)
        return spool.read(chunk_size)

    offset = 0
    while chunk := await asyncio.to_thread(read_from, offset):
        offset += len(chunk)
        yield chunk

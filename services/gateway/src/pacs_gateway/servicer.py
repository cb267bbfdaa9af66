"""IngestService: Part 10 files over gRPC, under the same durability rule as C-STORE.

Thin: it frames the client stream into files, spools each (:class:`FileSpool`: bounded memory, the
rest on local disk), hands it to :class:`~pacs_gateway.ingest.Ingest` and maps the outcome. Bad
files are refused one by one (the stream goes on); only a malformed stream (a chunk before any
header) fails the call with INVALID_ARGUMENT.

Callers are cloud applications with a bearer token carrying the role ``ingest``
(:func:`authorization`). Files go to the token's tenant: a file header naming another tenant
fails the call with PERMISSION_DENIED as soon as that header arrives, before that file or the
one before it is stored (files acknowledged earlier in the stream stay stored).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, BinaryIO, cast

from pacs.ingest.v1 import ingest_service_pb2 as ingest_pb
from pacs.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from pacs_common.auth import AuthorizationInterceptor, AuthSettings, Caller, Role, caller_of
from pacs_common.errors import InvalidArgumentError, PacsError, UnavailableError

from pacs_gateway.ingest import Ingest

log = logging.getLogger(__name__)

Outcome = ingest_pb.StoreOutcome

SERVICE = ingest_pb.DESCRIPTOR.services_by_name["IngestService"].full_name
ROLES = {"Echo": Role.INGEST, "Store": Role.INGEST}
"""The role each IngestService method needs."""


def authorization(settings: AuthSettings) -> AuthorizationInterceptor:
    """The interceptor that authenticates IngestService callers and checks :data:`ROLES`."""
    return AuthorizationInterceptor(settings, {SERVICE: ROLES})


class IngestServicer(ingest_grpc.IngestServiceServicer):
    """gRPC front of the ingest path."""

    def __init__(
        self,
        ingest: Ingest,
        ae_title: str,
        default_tenant: str,
        max_file_bytes: int,
        storage_ready: Callable[[], Awaitable[bool]],
        *,
        spool_memory_bytes: int = 8 * 1024**2,
    ) -> None:
        self._spool_memory_bytes = spool_memory_bytes
        self._ingest = ingest
        self._ae_title = ae_title
        self._default_tenant = default_tenant
        self._max_file_bytes = max_file_bytes
        self._storage_ready = storage_ready

    async def Echo(  # noqa: N802  (gRPC method name)
        self, request: ingest_pb.EchoRequest, context: Any
    ) -> ingest_pb.EchoResponse:
        """Answer when the storage path is up too (like a C-ECHO that means something).

        Raises:
            UnavailableError: storage is not serving.
        """
        if not await self._storage_ready():
            raise UnavailableError("storage service is not serving")
        return ingest_pb.EchoResponse(ae_title=self._ae_title)

    async def Store(  # noqa: N802  (gRPC method name)
        self, request_iterator: AsyncIterator[ingest_pb.StoreRequest], context: Any
    ) -> ingest_pb.StoreResponse:
        """Store each file of the stream; one result per file, in stream order.

        Raises:
            InvalidArgumentError: a chunk came before any header, or a message is empty.
        """
        caller = caller_of(context)
        results: list[ingest_pb.StoreFileResult] = []
        current: tuple[ingest_pb.StoreFileHeader, str, FileSpool] | None = None
        try:
            async for message in request_iterator:
                part = message.WhichOneof("part")
                if part == "header":
                    next_tenant = self._tenant(caller, message.header.tenant)
                    if current is not None:
                        results.append(await self._store_one(*current))
                    current = (message.header, next_tenant, self._spool())
                elif part == "chunk":
                    if current is None:
                        raise InvalidArgumentError("a chunk arrived before any file header")
                    await current[2].write(message.chunk)
                else:
                    raise InvalidArgumentError("a StoreRequest carries neither header nor chunk")
            if current is not None:
                results.append(await self._store_one(*current))
                current = None
        finally:
            if current is not None:
                current[2].close()
        return ingest_pb.StoreResponse(results=results)

    def _spool(self) -> FileSpool:
        return FileSpool(self._max_file_bytes, self._spool_memory_bytes)

    def _tenant(self, caller: Caller, requested: str) -> str:
        """The tenant a file goes to: the token's (PERMISSION_DENIED if the header names
        another); an internal service's file without a tenant goes to the default one."""
        if caller.trusted_service and not requested:
            return self._default_tenant
        return caller.tenant_for(requested)

    async def _store_one(
        self, header: ingest_pb.StoreFileHeader, tenant: str, spool: FileSpool
    ) -> ingest_pb.StoreFileResult:
        try:
            return await self._store_spooled(header, tenant, spool)
        finally:
            spool.close()

    async def _store_spooled(
        self, header: ingest_pb.StoreFileHeader, tenant: str, spool: FileSpool
    ) -> ingest_pb.StoreFileResult:
        result = ingest_pb.StoreFileResult(client_file_id=header.client_file_id)
        if spool.over_limit:
            result.outcome = Outcome.STORE_OUTCOME_REFUSED
            result.reason = f"file larger than {self._max_file_bytes} bytes"
            return result
        if spool.size == 0:
            result.outcome = Outcome.STORE_OUTCOME_REFUSED
            result.reason = "empty file"
            return result
        try:
            stored = await self._ingest.store_file(
                tenant, spool.file, spool.size, spool.sha256.hexdigest()
            )
        except UnavailableError as exc:
            result.outcome = Outcome.STORE_OUTCOME_UNAVAILABLE
            result.reason = exc.message
            return result
        except InvalidArgumentError as exc:
            result.outcome = Outcome.STORE_OUTCOME_REFUSED
            result.reason = exc.message
            return result
        except PacsError as exc:
            log.warning("storage refused a file", extra={"error": exc.message})
            result.outcome = Outcome.STORE_OUTCOME_REFUSED
            result.reason = exc.message
            return result
        result.outcome = (
            Outcome.STORE_OUTCOME_ALREADY_PRESENT
            if stored.already_present
            else Outcome.STORE_OUTCOME_STORED
        )
        result.object.CopyFrom(stored.object)
        return result


class FileSpool:
    """One file of a Store stream as it arrives: in memory up to ``memory_bytes``, then in a
    temporary file on local disk, with its size and SHA-256 counted on the way.

    Why not in memory: files may be up to ``max_file_bytes`` (2 GiB by default) against a pod
    memory limit of 1 GiB, and several streams run at once. Why not straight to storage: the
    file's identifiers are in its header, which must be read (and the file refused if it is
    unreadable) before storage is called, and a gRPC stream cannot be rewound; the spool is
    read once for the identifiers (values skipped) and once for the upload. Past
    ``max_file_bytes`` nothing more is kept: the file is refused.
    """

    def __init__(self, max_bytes: int, memory_bytes: int) -> None:
        self._max_bytes = max_bytes
        # closed by close(), which every path of Store calls (a context manager cannot span
        # the stream's messages)
        spooled = tempfile.SpooledTemporaryFile(max_size=memory_bytes)  # noqa: SIM115
        self.file: BinaryIO = cast(BinaryIO, spooled)
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.over_limit = False

    async def write(self, chunk: bytes) -> None:
        """Add the next bytes of the file (dropped, and the file marked refused, past the
        limit)."""
        self.size += len(chunk)
        if self.over_limit or self.size > self._max_bytes:
            if not self.over_limit:
                self.over_limit = True
                self.file.truncate(0)  # refused anyway; stop holding its bytes
            return
        self.sha256.update(chunk)
        await asyncio.to_thread(self.file.write, chunk)

    def close(self) -> None:
        """Delete the spool (idempotent)."""
        self.file.close()

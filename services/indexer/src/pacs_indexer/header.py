"""An instance's header: from its ``InstanceStored`` event, or read from the storage service
without reading its pixel data.

Storage puts the header in the event when it is at most its cap (``header_part10``), so the
storage read here is for larger headers, events from before that field, and reindexing.

The first ``prefix_bytes`` of the object are fetched with a ranged ``StorageService.Get`` (through
:class:`pacs_common.clients.storage.StorageClient`) and parsed by
:func:`pacs_common.dicom.split_header`, which accepts a prefix only when parsing stopped exactly
at a Pixel Data element (PS3.5 7.1); otherwise a larger range is read, up to
:data:`MAX_HEADER_BYTES` (never the whole of a large object without pixel data).
Deflated transfer syntaxes are always read whole (their position in the stream says nothing
about the parsed bytes).
"""

from __future__ import annotations

import logging

from pacs.type.v1 import instance_pb2
from pacs_common.clients.storage import StorageClient
from pacs_common.dicom import (
    DEFLATED_TRANSFER_SYNTAXES,
    UnreadableDicomError,
    read_truncated_header,
    split_header,
)
from pacs_common.errors import InvalidArgumentError, PermissionDeniedError, UnavailableError
from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024**2
"""Most of an object read for its header. Objects with Pixel Data have their header end where
it begins, well before this; an object without any (its whole data set is "header") is read
only this far, and the attributes in those bytes are indexed (tags ascend, PS3.5 7.1, so the
identifying ones come first)."""


class HeaderReader:
    """Reads headers through the storage service's gRPC API."""

    def __init__(
        self,
        storage: StorageClient,
        prefix_bytes: int = 64 * 1024,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self.storage = storage
        self.prefix_bytes = prefix_bytes
        self.max_header_bytes = max(max_header_bytes, prefix_bytes)

    async def read(self, instance: instance_pb2.InstanceRef, size: int) -> Dataset:
        """The header of ``instance``, whose stored object is ``size`` bytes (0: unknown).

        Raises:
            NotFoundError: storage no longer has the object.
            UnavailableError: storage cannot be reached (retriable).
            InvalidArgumentError: the object is not readable DICOM.
        """
        length = self.prefix_bytes
        if instance.transfer_syntax_uid in DEFLATED_TRANSFER_SYNTAXES:
            length = 0
        while True:
            data = await self._get(instance, length)
            whole = length == 0 or len(data) < length or (size and len(data) >= size)
            dataset = _parse(data, complete=bool(whole))
            if dataset is not None:
                return dataset
            if length >= self.max_header_bytes:
                # No Pixel Data within the bound (an encapsulated document, a long report):
                # what the bound holds is indexed, the rest of the object is never read.
                log.info("header read stopped at its bound", extra={"length": length})
                return _parse_truncated(data)
            length = 0 if size and length * 4 >= size else min(length * 4, self.max_header_bytes)
            log.debug("header longer than the prefix; reading more", extra={"length": length})

    async def head(self, instance: instance_pb2.InstanceRef) -> instance_pb2.ObjectInfo:
        """The current stored object of ``instance``.

        Raises:
            NotFoundError: storage has no object for it.
            UnavailableError: storage cannot be reached (retriable).
        """
        try:
            return await self.storage.head(instance)
        except PermissionDeniedError as exc:
            raise _refused(exc) from exc

    async def _get(self, instance: instance_pb2.InstanceRef, length: int) -> bytes:
        try:
            return await self.storage.get(instance, offset=0, length=length)
        except PermissionDeniedError as exc:
            raise _refused(exc) from exc


def _refused(exc: PermissionDeniedError) -> UnavailableError:
    """Storage refusing this service's identity is a deployment error that no event can get
    past: wait (retriable) until it is fixed instead of dead-lettering every event meanwhile.
    Every other failure comes translated by the client (NOT_FOUND and INVALID_ARGUMENT are
    permanent, UNAVAILABLE retriable, the rest retried a few times then dead-lettered)."""
    return UnavailableError(f"storage refused the indexer's identity: {exc.message}")


def _parse(data: bytes, complete: bool) -> Dataset | None:
    """Parse a header; None when ``data`` is a prefix that stops before the header ends.

    Raises:
        InvalidArgumentError: ``complete`` and the object is not readable DICOM.
    """
    try:
        parsed = split_header(data, complete)
    except UnreadableDicomError as exc:
        raise InvalidArgumentError(f"stored object is not readable DICOM: {exc.message}") from exc
    return None if parsed is None else parsed[0]


def _parse_truncated(data: bytes) -> Dataset:
    """The elements of a bounded prefix (:func:`pacs_common.dicom.read_truncated_header`).

    Raises:
        InvalidArgumentError: the prefix is not readable DICOM.
    """
    try:
        return read_truncated_header(data)
    except UnreadableDicomError as exc:
        raise InvalidArgumentError(f"stored object is not readable DICOM: {exc.message}") from exc


def parse_event_header(header_part10: bytes) -> Dataset:
    """The header that storage put in an ``InstanceStored`` event (a Part 10 prefix ending
    where pixel data begins, or a whole small object).

    Raises:
        InvalidArgumentError: the bytes are not readable DICOM.
    """
    try:
        parsed = split_header(header_part10, complete=True)
    except UnreadableDicomError as exc:
        raise InvalidArgumentError(f"event header is not readable DICOM: {exc.message}") from exc
    if parsed is None:  # never for complete=True; the check keeps the type exact
        raise InvalidArgumentError("event header is not readable DICOM")
    return parsed[0]

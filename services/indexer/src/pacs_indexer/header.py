"""Reading an instance's header from the storage service without reading its pixel data.

The first ``prefix_bytes`` of the object are fetched with a ranged ``StorageService.Get`` (through
:class:`pacs_common.clients.storage.StorageClient`) and
parsed with ``stop_before_pixels``. pydicom parses a truncated prefix without complaint, so the
parse counts as complete only when the whole object was read or parsing stopped exactly at a
Pixel Data element (PS3.5 7.1, tags (7FE0,0008/0009/0010)); otherwise a larger range is read,
up to the whole object. Deflated transfer syntaxes are always read whole (their position in
the stream says nothing about the parsed bytes).
"""

from __future__ import annotations

import io
import logging

from pacs.type.v1 import instance_pb2
from pacs_common.clients.storage import StorageClient
from pacs_common.errors import InvalidArgumentError, PermissionDeniedError, UnavailableError
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

log = logging.getLogger(__name__)

_PIXEL_TAGS_LE = (b"\xe0\x7f\x10\x00", b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00")
_PIXEL_TAGS_BE = (b"\x7f\xe0\x00\x10", b"\x7f\xe0\x00\x08", b"\x7f\xe0\x00\x09")
_DEFLATED = {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1"}


class HeaderReader:
    """Reads headers through the storage service's gRPC API."""

    def __init__(self, storage: StorageClient, prefix_bytes: int = 64 * 1024) -> None:
        self.storage = storage
        self.prefix_bytes = prefix_bytes

    async def read(self, instance: instance_pb2.InstanceRef, size: int) -> Dataset:
        """The header of ``instance``, whose stored object is ``size`` bytes (0: unknown).

        Raises:
            NotFoundError: storage no longer has the object.
            UnavailableError: storage cannot be reached (retriable).
            InvalidArgumentError: the object is not readable DICOM.
        """
        length = self.prefix_bytes
        if instance.transfer_syntax_uid in _DEFLATED:
            length = 0
        while True:
            data = await self._get(instance, length)
            whole = length == 0 or len(data) < length or (size and len(data) >= size)
            dataset = _parse(data, complete=bool(whole))
            if dataset is not None:
                return dataset
            length = 0 if size and length * 4 >= size else length * 4
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
    """Parse a header; None when ``data`` is a prefix that stops before the header ends."""
    stream = io.BytesIO(data)
    try:
        dataset = dcmread(stream, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
        if complete:
            raise InvalidArgumentError(f"stored object is not readable DICOM: {exc}") from exc
        return None
    if complete:
        return dataset
    position = stream.tell()
    following = data[position : position + 4]
    if len(following) == 4 and following in (*_PIXEL_TAGS_LE, *_PIXEL_TAGS_BE):
        return dataset
    return None

"""WADO-RS retrieval of instances, frames and bulk data (PS3.18 10.4).

A study or series is sent **one instance at a time**: the instances are listed from the index
page by page, each is opened on storage and its chunks are forwarded as they arrive, so memory
holds one chunk of one instance (or one instance, when it must be decoded), never a study.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from pacs.query.v1 import query_service_pb2 as query_pb
from pacs.type.v1 import instance_pb2
from pacs_common.errors import NotFoundError, ResourceExhaustedError

from pacs_dicomweb import pixels
from pacs_dicomweb.backend import Backend
from pacs_dicomweb.media import Choice, MediaRange, choose

LIST_PAGE = 1000


@dataclass(frozen=True)
class Address:
    """What a WADO-RS path names: a study, a series, or an instance."""

    tenant: str
    study: str
    series: str = ""
    instance: str = ""

    def ref(self, series: str = "", instance: str = "") -> instance_pb2.InstanceRef:
        """The storage address of one instance below this address."""
        return instance_pb2.InstanceRef(
            tenant=self.tenant,
            study_instance_uid=self.study,
            series_instance_uid=series or self.series,
            sop_instance_uid=instance or self.instance,
        )


async def instance_refs(
    backend: Backend, address: Address
) -> AsyncIterator[instance_pb2.InstanceRef]:
    """The instances under ``address`` from the index, page by page.

    Raises:
        NotFoundError: nothing is indexed there.
    """
    if address.instance:
        yield await indexed_ref(backend, address)
        return
    offset = 0
    while True:
        page = await _find(backend, address, offset, LIST_PAGE)
        if not page and offset == 0:
            raise NotFoundError("no indexed instance at this address")
        for series, sop in page:
            yield address.ref(series, sop)
        if len(page) < LIST_PAGE:
            return
        offset += LIST_PAGE


async def indexed_ref(backend: Backend, address: Address) -> instance_pb2.InstanceRef:
    """The storage address of the instance ``address`` names, once the index has it.

    Storage keeps objects the index hides (instances rejected by an IHE IOCM rejection note,
    kept until the deletion policy removes them), so an instance is read only when the index
    lists it, even when the path names its series.

    Raises:
        NotFoundError: the index has no such instance.
    """
    found = await _find(backend, address, 0, 1)
    if not found:
        raise NotFoundError("no such instance")
    series, sop = found[0]
    return address.ref(series, sop)


async def _find(
    backend: Backend, address: Address, offset: int, limit: int
) -> list[tuple[str, str]]:
    match = {"StudyInstanceUID": address.study}
    if address.series:
        match["SeriesInstanceUID"] = address.series
    if address.instance:
        match["SOPInstanceUID"] = address.instance
    response = await backend.query.find_instances(
        query_pb.Query(
            tenant=address.tenant,
            match=match,
            return_keys=["SeriesInstanceUID", "SOPInstanceUID"],
            limit=limit,
            offset=offset,
        )
    )
    result = []
    for text in response.datasets:
        dataset = json.loads(text)
        result.append((dataset["0020000E"]["Value"][0], dataset["00080018"]["Value"][0]))
    return result


class InstanceCache:
    """Recently read whole instances, by address and storage version, within a byte budget.

    Viewers ask for the frames of one multi-frame object one request at a time; without this
    each request would read the whole object from storage again. Entries are keyed by the
    version storage reports (``Head``), so a re-stored instance is never served stale.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, ...], tuple[str, str, bytes]] = OrderedDict()
        self._size = 0

    @staticmethod
    def key(ref: instance_pb2.InstanceRef) -> tuple[str, ...]:
        return (ref.tenant, ref.study_instance_uid, ref.series_instance_uid, ref.sop_instance_uid)

    def get(self, ref: instance_pb2.InstanceRef, version: str) -> tuple[str, bytes] | None:
        """The cached (transfer syntax, bytes) of this version, if held."""
        entry = self._entries.get(self.key(ref))
        if entry is None or entry[0] != version:
            return None
        self._entries.move_to_end(self.key(ref))
        return entry[1], entry[2]

    def put(self, ref: instance_pb2.InstanceRef, version: str, syntax: str, data: bytes) -> None:
        """Hold an instance (evicting the least recently used ones past the budget)."""
        if len(data) > self.max_bytes // 2:
            return  # one object must not flush everything else
        old = self._entries.pop(self.key(ref), None)
        if old is not None:
            self._size -= len(old[2])
        self._entries[self.key(ref)] = (version, syntax, data)
        self._size += len(data)
        while self._size > self.max_bytes and self._entries:
            _, (_, _, evicted) = self._entries.popitem(last=False)
            self._size -= len(evicted)


async def read_whole(
    backend: Backend,
    ref: instance_pb2.InstanceRef,
    limit: int,
    cache: InstanceCache | None = None,
) -> tuple[str, bytes]:
    """One stored instance in memory (verified by storage): its transfer syntax and bytes.

    Raises:
        ResourceExhaustedError: larger than ``limit`` (``PACS_DICOMWEB_MAX_DECODE_BYTES``).
    """
    version = ""
    if cache is not None:
        head = await backend.storage.head(ref)
        version = head.version_id
        hit = cache.get(ref, version)
        if hit is not None:
            return hit
    info, chunks = await backend.objects.open(ref, version_id=version)
    if info.size > limit:
        raise ResourceExhaustedError(
            f"the instance has {info.size} bytes, more than the {limit} read whole for "
            "frames, bulk data or transcoding"
        )
    data = b"".join([chunk async for chunk in chunks])
    syntax = info.instance.transfer_syntax_uid
    if cache is not None:
        cache.put(ref, version, syntax, data)
    return syntax, data


@dataclass
class InstancePart:
    """One instance ready to send: its part Content-Type and its bytes."""

    content_type: str
    chunks: AsyncIterator[bytes]
    size: int


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def open_instance(
    backend: Backend,
    ref: instance_pb2.InstanceRef,
    ranges: list[MediaRange],
    default: MediaRange,
    max_decode_bytes: int,
) -> InstancePart:
    """Open one instance in the representation the client accepts (as stored when it can).

    Raises:
        NotAcceptableError: the client accepts no representation that can be produced.
        NotFoundError: the instance is not stored.
    """
    info, chunks = await backend.objects.open(ref)
    stored = info.instance.transfer_syntax_uid
    choice = choose(ranges, stored, instance=True, default=default)
    part_type = f"application/dicom; transfer-syntax={choice.transfer_syntax}"
    if not choice.transcode:
        return InstancePart(part_type, chunks, info.size)
    if info.size > max_decode_bytes:
        raise ResourceExhaustedError("the instance is too large to decode here")
    data = b"".join([chunk async for chunk in chunks])
    converted = await asyncio.to_thread(pixels.to_explicit_little_endian, data)
    return InstancePart(part_type, _one(converted), len(converted))


async def prefetched(
    refs: AsyncIterator[instance_pb2.InstanceRef],
    open_part: Callable[[instance_pb2.InstanceRef], Awaitable[InstancePart]],
    depth: int,
    buffer_limit: int,
) -> AsyncIterator[InstancePart]:
    """The parts of ``refs`` in order, with up to ``depth`` instances opened ahead.

    Reading one instance after the other is bound by each one's round trips (index, storage,
    S3), not by bandwidth: a study of small CT slices came at 3 MB/s. Instances up to
    ``buffer_limit`` bytes are read whole ahead of their turn, so memory holds at most
    ``depth`` of them; larger ones are opened ahead but stream only when their turn comes
    (gRPC flow control holds the rest). Whatever is still in flight when the client goes
    away is cancelled.
    """

    async def fetch(ref: instance_pb2.InstanceRef) -> InstancePart:
        part = await open_part(ref)
        if part.size > buffer_limit:
            return part
        data = b"".join([chunk async for chunk in part.chunks])
        return InstancePart(part.content_type, _one(data), len(data))

    pending: deque[asyncio.Task[InstancePart]] = deque()
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < depth:
                try:
                    ref = await anext(refs)
                except StopAsyncIteration:
                    exhausted = True
                    break
                pending.append(asyncio.create_task(fetch(ref)))
            if not pending:
                return
            yield await pending.popleft()
    finally:
        for task in pending:
            task.cancel()


async def frames(
    backend: Backend,
    ref: instance_pb2.InstanceRef,
    numbers: list[int],
    ranges: list[MediaRange],
    *,
    default: MediaRange,
    max_decode_bytes: int,
    cache: InstanceCache | None = None,
) -> tuple[Choice, list[bytes]]:
    """The frames ``numbers`` of one instance in the syntax the client accepts.

    Raises:
        NotFoundError: no such instance, no pixel data, or a frame out of range.
        NotAcceptableError: nothing acceptable can be produced.
    """
    stored, data = await read_whole(backend, ref, max_decode_bytes, cache)
    choice = choose(ranges, stored, instance=False, default=default)
    return choice, await asyncio.to_thread(_frames, data, numbers, choice)


def _frames(data: bytes, numbers: list[int], choice: Choice) -> list[bytes]:
    dataset = pixels.read_dataset(data)
    pixels.check_frames(dataset, numbers)
    if choice.transcode:
        return [pixels.decoded_frame(dataset, n) for n in numbers]
    return [pixels.stored_frame(dataset, n) for n in numbers]

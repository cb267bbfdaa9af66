"""Transcoding objects that arrive and leave as streams, with bounded memory and concurrency.

The incoming object is spooled (memory up to ``spool_memory_bytes``, then a temporary file),
because decoding needs to seek (offset tables, the header before the frames); the output is
spooled the same way, because its first message (the result, with the size) can only be sent
once the last frame is encoded. Transcoding runs on a worker thread (the codecs release the
GIL), at most ``max_concurrent`` at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import IO

from pacs_common.errors import ResourceExhaustedError
from pacs_common.metrics import TRANSCODE_BYTES, TRANSCODE_DURATION
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from pacs_transcoder.encoders import LossyOptions
from pacs_transcoder.errors import UnsupportedImageError
from pacs_transcoder.transcode import TranscodeResult, transcode

Spool = IO[bytes]


@dataclass(frozen=True)
class Converted:
    """A finished transcoding: what it produced and the output object (rewound)."""

    result: TranscodeResult
    output: Spool
    size: int
    unchanged: bool

    def close(self) -> None:
        """Release the output spool."""
        self.output.close()

    async def chunks(self, size: int) -> AsyncIterator[bytes]:
        """The output's bytes."""
        self.output.seek(0)
        while chunk := await asyncio.to_thread(self.output.read, size):
            yield chunk


class Converter:
    """Runs transcodings: spools, the worker threads, the concurrency limit."""

    def __init__(
        self,
        max_concurrent: int,
        max_object_size: int,
        spool_memory_bytes: int,
        options: LossyOptions,
        uid_root: str | None = None,
    ) -> None:
        self._slots = asyncio.Semaphore(max_concurrent)
        self.max_object_size = max_object_size
        self.spool_memory_bytes = spool_memory_bytes
        self.options = options
        self.uid_root = uid_root

    def new_spool(self) -> Spool:
        """An empty spool (memory first, then a temporary file)."""
        return tempfile.SpooledTemporaryFile(max_size=self.spool_memory_bytes)

    async def spool(self, chunks: AsyncIterable[bytes]) -> Spool:
        """Receive an object into a spool.

        Raises:
            ResourceExhaustedError: it is larger than ``max_object_size``.
        """
        spool = self.new_spool()
        size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > self.max_object_size:
                    raise ResourceExhaustedError(f"the object exceeds {self.max_object_size} bytes")
                if len(chunk) > 64 * 1024:
                    await asyncio.to_thread(spool.write, chunk)  # may be a disk write
                else:
                    spool.write(chunk)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool

    async def convert(self, source: Spool, transfer_syntax: str, allow_lossy: bool) -> Converted:
        """Transcode a spooled object (the source spool stays the caller's to close).

        Raises:
            UnsupportedImageError, NotEncodableError, LossyRefusedError: see
                :func:`pacs_transcoder.transcode.transcode`.
        """
        async with self._slots:
            return await asyncio.to_thread(self._convert, source, transfer_syntax, allow_lossy)

    def _convert(self, source: Spool, transfer_syntax: str, allow_lossy: bool) -> Converted:
        started = time.perf_counter()
        stored = _stored_syntax(source)
        if stored == transfer_syntax:
            source.seek(0, 2)
            size = source.tell()
            source.seek(0)
            copy = self.new_spool()
            while chunk := source.read(1024 * 1024):
                copy.write(chunk)
            result = _unchanged(source, stored)
            copy.seek(0)
            return Converted(result, copy, size, unchanged=True)
        output = self.new_spool()
        try:
            result = transcode(
                source,
                output,
                transfer_syntax,
                allow_lossy=allow_lossy,
                options=self.options,
                uid_root=self.uid_root,
            )
        except BaseException:
            output.close()
            raise
        size = output.tell()
        output.seek(0)
        TRANSCODE_DURATION.labels(transfer_syntax).observe(time.perf_counter() - started)
        TRANSCODE_BYTES.labels(transfer_syntax, "in").inc(result.pixel_bytes_in)
        TRANSCODE_BYTES.labels(transfer_syntax, "out").inc(size)
        return Converted(result, output, size, unchanged=False)

    @contextlib.asynccontextmanager
    async def converted(
        self, chunks: AsyncIterable[bytes], transfer_syntax: str, allow_lossy: bool
    ) -> AsyncIterator[Converted]:
        """Spool ``chunks``, transcode them, and release both spools afterwards."""
        source = await self.spool(chunks)
        try:
            converted = await self.convert(source, transfer_syntax, allow_lossy)
        finally:
            source.close()
        try:
            yield converted
        finally:
            converted.close()


def _stored_syntax(source: Spool) -> str:
    source.seek(0)
    try:
        meta = dcmread(source, stop_before_pixels=True, specific_tags=[0x00020010])
    except (InvalidDicomError, EOFError, OSError, ValueError) as exc:
        raise UnsupportedImageError(f"not a readable DICOM Part 10 object: {exc}") from exc
    finally:
        source.seek(0)
    syntax = meta.file_meta.get("TransferSyntaxUID")
    if not syntax:
        raise UnsupportedImageError("the file meta information has no Transfer Syntax UID")
    return str(syntax)


def _unchanged(source: Spool, stored: str) -> TranscodeResult:
    source.seek(0)
    header = dcmread(source, stop_before_pixels=True)
    source.seek(0)
    lossy = header.get("LossyImageCompression") == "01"
    return TranscodeResult(
        stored, stored, str(header.get("SOPInstanceUID", "")), lossy, False,
        int(header.get("NumberOfFrames") or 1), 0, 0,
    )  # fmt: skip

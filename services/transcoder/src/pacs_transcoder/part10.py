"""Writing a Part 10 object whose pixel data arrives one frame at a time (PS3.10 7, PS3.5 A.4).

The header (file meta and every element before Pixel Data) is written by pydicom; the Pixel
Data element is written here, because pydicom can only write pixel data it holds in memory.
Encapsulated frames are first collected in a spooled temporary file (memory up to a threshold,
then disk), because the Basic Offset Table — or the Extended Offset Table for objects of 4 GiB
and more (PS3.5 A.4.2), which precedes Pixel Data — needs every frame's size before the first
fragment is written. One frame is one fragment, padded to an even length.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import zlib
from typing import IO

from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info

SPOOL_IN_MEMORY = 8 * 1024 * 1024
"""Bytes of encoded frames kept in memory before the spool moves to disk."""
_ITEM = b"\xfe\xff\x00\xe0"
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_PIXEL_DATA = b"\xe0\x7f\x10\x00"
_UNDEFINED = 0xFFFFFFFF


class FrameSpool:
    """Encoded frames, one fragment each, with the offsets the offset tables need."""

    def __init__(self) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
        self.offsets: list[int] = []
        self.lengths: list[int] = []
        self.size = 0

    def add(self, fragment: bytes) -> None:
        """Append one frame (padded to even length) as one item."""
        self.offsets.append(self.size)
        self.lengths.append(len(fragment))
        padded = fragment + b"\x00" if len(fragment) % 2 else fragment
        self.file.write(_ITEM + struct.pack("<I", len(padded)))
        self.file.write(padded)
        self.size += 8 + len(padded)

    def close(self) -> None:
        """Release the spool (memory or temporary file)."""
        self.file.close()

    @property
    def needs_extended_offsets(self) -> bool:
        """Offsets past 32 bits need the Extended Offset Table (PS3.5 A.4.2)."""
        return self.size >= 1 << 32


def add_extended_offsets(header: Dataset, spool: FrameSpool) -> None:
    """Extended Offset Table (7FE0,0001) and its lengths (7FE0,0002), both OV, when needed."""
    if spool.needs_extended_offsets:
        header.ExtendedOffsetTable = struct.pack(f"<{len(spool.offsets)}Q", *spool.offsets)
        header.ExtendedOffsetTableLengths = struct.pack(f"<{len(spool.lengths)}Q", *spool.lengths)


class _DeflatingWriter:
    """A write-only stream that deflates into another (PS3.5 A.5: raw deflate, no header)."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        self.written = 0

    def write(self, data: bytes) -> int:
        out = self.compressor.compress(data)
        self.target.write(out)
        self.written += len(out)
        return len(data)

    def finish(self) -> None:
        out = self.compressor.flush()
        self.target.write(out)
        self.written += len(out)
        if self.written % 2:
            self.target.write(b"\x00")


def _element_header(implicit: bool, vr: bytes, length: int) -> bytes:
    if implicit:
        return _PIXEL_DATA + struct.pack("<I", length)
    return _PIXEL_DATA + vr + b"\x00\x00" + struct.pack("<I", length)


def _header_bytes(header: Dataset, implicit: bool) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = implicit
    write_dataset(buffer, header)
    return buffer.getvalue()


def write_preamble_and_meta(out: IO[bytes], file_meta: FileMetaDataset) -> None:
    """128-byte preamble, ``DICM`` and the File Meta Information group (PS3.10 7.1)."""
    out.write(b"\x00" * 128 + b"DICM")
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, file_meta, enforce_standard=True)
    out.write(buffer.getvalue())


def write_encapsulated(out: IO[bytes], header: Dataset, spool: FrameSpool) -> None:
    """The dataset with encapsulated Pixel Data: offset table item, then one item per frame."""
    out.write(_header_bytes(header, implicit=False))
    out.write(_element_header(False, b"OB", _UNDEFINED))
    if spool.needs_extended_offsets:
        out.write(_ITEM + struct.pack("<I", 0))  # PS3.5 A.4: empty BOT beside an EOT
    else:
        table = struct.pack(f"<{len(spool.offsets)}I", *spool.offsets)
        out.write(_ITEM + struct.pack("<I", len(table)) + table)
    spool.file.seek(0)
    shutil.copyfileobj(spool.file, out, 1024 * 1024)
    out.write(_SEQUENCE_DELIMITER)


class NativeWriter:
    """Writes the dataset with native Pixel Data, frame by frame (deflated for PS3.5 A.5)."""

    def __init__(self, out: IO[bytes], header: Dataset, transfer_syntax: str, length: int) -> None:
        implicit = transfer_syntax == uid.ImplicitVRLittleEndian
        self._deflating = (
            _DeflatingWriter(out) if transfer_syntax == uid.DeflatedExplicitVRLittleEndian else None
        )
        self._out: _DeflatingWriter | IO[bytes] = self._deflating or out
        self._pad = length % 2
        vr = b"OW" if int(header.BitsAllocated) > 8 else b"OB"
        self._out.write(_header_bytes(header, implicit))
        self._out.write(_element_header(implicit, vr, length + self._pad))

    def write_frame(self, data: bytes) -> None:
        """Append one frame's native bytes."""
        self._out.write(data)

    def finish(self) -> None:
        """Pad the value to even length (PS3.5 7.1.1) and end the deflated stream."""
        if self._pad:
            self._out.write(b"\x00")
        if self._deflating is not None:
            self._deflating.finish()

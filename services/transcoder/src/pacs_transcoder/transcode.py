"""Transcode one Part 10 object into another transfer syntax, one frame at a time.

The source is a seekable binary file (a spooled temporary file in the service), the result is
written to another. Memory holds the header and one decoded frame (plus the encoded frames up
to :data:`pacs_transcoder.part10.SPOOL_IN_MEMORY` before they spill to disk).

What changes besides the pixel encoding (PS3.3 C.7.6.1.1.5, C.7.6.3; PS3.5 8.2):
- Photometric Interpretation follows the target's rules (YBR_RCT/YBR_ICT for JPEG 2000 and
  HTJ2K colour, YBR_FULL_422 for lossy JPEG colour, RGB when decoding those); Planar
  Configuration is 0 (the encoders take interleaved samples).
- Lossy output: Lossy Image Compression (0028,2110) "01", the ratio and method appended to
  (0028,2112)/(0028,2114), and a new SOP Instance UID (the lossy image is a new instance).
  Decoding an already lossy instance into a lossless syntax keeps its UID and its "01".
- Group lengths, offset tables and trailing elements after Pixel Data are not copied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import IO

from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import generate_uid

from pacs_transcoder import frames
from pacs_transcoder.encoders import LossyOptions, encode_frame, native_frame
from pacs_transcoder.errors import LossyRefusedError, UnsupportedImageError
from pacs_transcoder.part10 import (
    FrameSpool,
    NativeWriter,
    add_extended_offsets,
    write_encapsulated,
    write_preamble_and_meta,
)
from pacs_transcoder.syntaxes import Syntax, can_read, is_lossy_syntax, target

log = logging.getLogger(__name__)

IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1464.1"
"""Written into the file meta of every object the transcoder writes (PS3.7 D.3.3.2)."""
IMPLEMENTATION_VERSION = "CLOUDPACS_TC_1"
_DROPPED = (0x7FE00001, 0x7FE00002, 0x7FE00008, 0x7FE00009)


@dataclass(frozen=True)
class TranscodeResult:
    """What a transcoding produced."""

    source_transfer_syntax: str
    transfer_syntax: str
    sop_instance_uid: str
    lossy: bool
    """The output is lossy (newly, or because its source already was)."""
    new_instance: bool
    """A new SOP Instance UID was assigned (lossy compression)."""
    frames: int
    pixel_bytes_in: int
    """Bytes of decoded pixel data (the uncompressed size)."""
    pixel_bytes_out: int
    """Bytes of pixel data written."""


def _output_header(source: Dataset, syntax: Syntax) -> Dataset:
    header = Dataset()
    for element in source:
        if element.tag.element == 0 or element.tag in _DROPPED:
            continue  # group lengths are optional and would be wrong (PS3.5 7.2)
        header.add(element)
    meta = FileMetaDataset()
    for element in source.file_meta:
        if element.tag.element != 0:
            meta.add(element)
    meta.TransferSyntaxUID = uid.UID(syntax.uid)
    meta.ImplementationClassUID = uid.UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    header.file_meta = meta
    return header


def _values(header: Dataset, keyword: str) -> list[str]:
    """The values of a possibly multi-valued attribute, as strings (none when absent)."""
    value = header.get(keyword)
    if value is None or value == "":
        return []
    if isinstance(value, str | int | float):
        return [str(value)]
    return [str(v) for v in value]


def _mark_lossy(header: Dataset, syntax: Syntax, ratio: float, uid_root: str | None) -> str:
    """PS3.3 C.7.6.1.1.5: Lossy Image Compression "01", ratio and method appended (one value per
    lossy step), and a new SOP Instance UID."""
    header.LossyImageCompression = "01"
    header.LossyImageCompressionRatio = [
        *_values(header, "LossyImageCompressionRatio"),
        f"{ratio:.4g}",
    ]
    header.LossyImageCompressionMethod = [
        *_values(header, "LossyImageCompressionMethod"),
        syntax.method,
    ]
    new_uid = generate_uid(prefix=uid_root)
    header.SOPInstanceUID = new_uid
    header.file_meta.MediaStorageSOPInstanceUID = uid.UID(new_uid)
    return new_uid


def transcode(
    source: IO[bytes],
    out: IO[bytes],
    transfer_syntax: str,
    *,
    allow_lossy: bool = False,
    options: LossyOptions | None = None,
    uid_root: str | None = None,
) -> TranscodeResult:
    """Write ``source`` (a seekable Part 10 object) to ``out`` in ``transfer_syntax``.

    Args:
        allow_lossy: a lossy target is refused unless this is true.
        options: quality of the lossy encoders.
        uid_root: prefix of new SOP Instance UIDs (default: pydicom's).

    Raises:
        UnsupportedImageError: the source is not DICOM with pixel data the transcoder reads.
        NotEncodableError: the pixels cannot be represented in the target syntax.
        LossyRefusedError: the target is lossy and ``allow_lossy`` is false.
        InvalidArgumentError: the target syntax is unknown.
    """
    try:
        syntax = target(transfer_syntax)
    except KeyError:
        raise UnsupportedImageError(f"cannot write transfer syntax {transfer_syntax!r}") from None
    if syntax.lossy and not allow_lossy:
        raise LossyRefusedError(f"{syntax.name} is lossy and lossy output was not allowed")
    source_header = frames.read_header(source)
    stored_syntax = str(source_header.file_meta.TransferSyntaxUID)
    if not can_read(stored_syntax):
        raise UnsupportedImageError(f"cannot read transfer syntax {stored_syntax}")
    stored = frames.describe(source_header)
    photometric, raw = frames.decoded_photometric(stored_syntax, stored)
    decoded = stored.with_photometric(photometric)
    header = _output_header(source_header, syntax)
    options = options or LossyOptions()
    pixel_in = decoded.frame_bytes * decoded.number_of_frames
    source_lossy = (
        is_lossy_syntax(stored_syntax) or source_header.get("LossyImageCompression") == "01"
    )

    if not syntax.encapsulated:
        count = _write_native(source, out, header, syntax, decoded, raw)
        return TranscodeResult(
            stored_syntax, syntax.uid, str(header.SOPInstanceUID), source_lossy, False,
            count, pixel_in, pixel_in,
        )  # fmt: skip

    spool = FrameSpool()
    try:
        out_photometric = photometric
        count = 0
        for frame in frames.iter_frames(source, raw):
            encoded, out_photometric = encode_frame(frame, decoded, syntax, options)
            spool.add(encoded)
            count += 1
        _check_count(count, decoded)
        header.PhotometricInterpretation = out_photometric
        if decoded.samples_per_pixel > 1:
            header.PlanarConfiguration = 0
        new_instance = False
        if syntax.lossy:
            ratio = pixel_in / max(1, sum(spool.lengths))
            _mark_lossy(header, syntax, ratio, uid_root)
            new_instance = True
        add_extended_offsets(header, spool)
        write_preamble_and_meta(out, header.file_meta)
        write_encapsulated(out, header, spool)
        return TranscodeResult(
            stored_syntax, syntax.uid, str(header.SOPInstanceUID), syntax.lossy or source_lossy,
            new_instance, count, pixel_in, sum(spool.lengths),
        )  # fmt: skip
    finally:
        spool.close()


def _write_native(  # noqa: PLR0917  (one call site; the arguments are the transcoding's state)
    source: IO[bytes],
    out: IO[bytes],
    header: Dataset,
    syntax: Syntax,
    decoded: frames.PixelDescription,
    raw: bool,
) -> int:
    """Native (or deflated) Pixel Data, frame by frame; returns the number of frames."""
    header.PhotometricInterpretation = decoded.photometric_interpretation
    if decoded.samples_per_pixel > 1:
        header.PlanarConfiguration = 0
    write_preamble_and_meta(out, header.file_meta)
    writer = NativeWriter(out, header, syntax.uid, decoded.frame_bytes * decoded.number_of_frames)
    count = 0
    for frame in frames.iter_frames(source, raw):
        writer.write_frame(native_frame(frame, decoded))
        count += 1
    writer.finish()
    _check_count(count, decoded)
    return count


def _check_count(count: int, description: frames.PixelDescription) -> None:
    if count != description.number_of_frames:
        raise UnsupportedImageError(
            f"the pixel data holds {count} frames, Number of Frames says "
            f"{description.number_of_frames}"
        )

"""DICOM helpers shared by the services: identifiers of a Part 10 object, UID checks, JSON."""

from __future__ import annotations

import io
import re
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

from pacs.type.v1 import instance_pb2
from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import (
    _at_pixel_data,
    _read_file_meta_info,
    read_dataset,
    read_preamble,
)
from pydicom.tag import BaseTag, Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian

from pacs_common.dicom_json import dicom_json
from pacs_common.errors import InvalidArgumentError

# PS3.5 9.1: components of digits separated by '.', no leading zero in a multi-digit
# component, at most 64 characters.
_UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
UID_MAX_LENGTH = 64


def is_valid_uid(value: str) -> bool:
    """True if ``value`` is a syntactically valid UID (PS3.5 9.1)."""
    return 0 < len(value) <= UID_MAX_LENGTH and bool(_UID_PATTERN.match(value))


@dataclass(frozen=True)
class Identifiers:
    """The UIDs that address an instance, read from its header."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str


def identifiers_of(dataset: Dataset, transfer_syntax_uid: str) -> Identifiers:
    """Read and check the four UIDs of an instance.

    Raises:
        InvalidArgumentError: a UID is missing or malformed (the dataset must be refused).
    """
    values = {
        "StudyInstanceUID": str(dataset.get("StudyInstanceUID", "") or "").strip(),
        "SeriesInstanceUID": str(dataset.get("SeriesInstanceUID", "") or "").strip(),
        "SOPInstanceUID": str(dataset.get("SOPInstanceUID", "") or "").strip(),
        "SOPClassUID": str(dataset.get("SOPClassUID", "") or "").strip(),
    }
    for keyword, value in values.items():
        if not value:
            raise InvalidArgumentError(f"{keyword} is missing")
        if not is_valid_uid(value):
            raise InvalidArgumentError(f"{keyword} is not a valid UID (PS3.5 9.1)")
    return Identifiers(
        study_instance_uid=values["StudyInstanceUID"],
        series_instance_uid=values["SeriesInstanceUID"],
        sop_instance_uid=values["SOPInstanceUID"],
        sop_class_uid=values["SOPClassUID"],
        transfer_syntax_uid=transfer_syntax_uid,
    )


# The elements that address an instance. Reading only these (the whole element structure is
# still walked, so a malformed header is still refused) costs a third less than a full header
# parse on the ingest path, where nothing else is needed.
IDENTIFIER_TAGS = [
    Tag("StudyInstanceUID"),
    Tag("SeriesInstanceUID"),
    Tag("SOPInstanceUID"),
    Tag("SOPClassUID"),
]


class UnreadableDicomError(InvalidArgumentError):
    """The bytes are not a readable DICOM Part 10 object."""


MAX_INFLATED_BYTES = 256 * 1024**2
"""Largest a deflated data set may inflate to when it is read (PS3.5 A.5). pydicom inflates
the whole stream at once, with no bound: a few kilobytes of zeros deflated inflate to
gigabytes (a "zip bomb"), so every read here inflates with this bound first and refuses an
object that passes it as unreadable."""

_PARSE_ERRORS = (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError)


def _meta_of(stream: BinaryIO) -> tuple[Dataset, int]:
    """The file meta information of a Part 10 stream and where the data set starts.

    Uses pydicom's own (private) meta reader: the public ``read_file_meta_info`` takes a path.
    """
    read_preamble(stream, False)
    meta = _read_file_meta_info(stream)
    return meta, stream.tell()


def inflate_bounded(deflated: bytes | BinaryIO, max_bytes: int = MAX_INFLATED_BYTES) -> bytes:
    """Inflate a raw deflate stream (PS3.5 A.5: RFC 1951, no zlib header), given whole or as
    a file read from its current position, to at most ``max_bytes``.

    Raises:
        UnreadableDicomError: the stream inflates past ``max_bytes`` or is not deflate data.
    """
    stream = io.BytesIO(deflated) if isinstance(deflated, bytes) else deflated
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    try:
        while chunk := stream.read(1024 * 1024):
            # max_length bounds the output of this call (never 0, which would mean unbounded)
            out += inflater.decompress(chunk, max_bytes - len(out) + 1)
            if len(out) > max_bytes or inflater.unconsumed_tail:
                raise UnreadableDicomError(f"deflated data set inflates past {max_bytes} bytes")
    except zlib.error as exc:
        raise UnreadableDicomError(f"deflated data set cannot be inflated: {exc}") from exc
    return bytes(out)


def _dcmread(
    part10: bytes | BinaryIO,
    *,
    tags: list[BaseTag] | None = None,
    max_inflated: int = MAX_INFLATED_BYTES,
) -> tuple[Dataset, int, bool]:
    """``dcmread(stop_before_pixels=True)`` that inflates a deflated data set with a bound.

    ``part10`` is the object's bytes or a seekable file positioned at its start (values of
    elements outside ``tags`` are then skipped, never read).

    Returns:
        The header, the stream position where parsing stopped (meaningless for a deflated
        object: then the object's end) and whether the object is deflated.
    """
    stream = io.BytesIO(part10) if isinstance(part10, bytes) else part10
    origin = stream.tell()
    try:
        meta, start = _meta_of(stream)
    except _PARSE_ERRORS:
        meta, start = Dataset(), origin  # dcmread below gives the error its own words
    if str(getattr(meta, "TransferSyntaxUID", "") or "") != DeflatedExplicitVRLittleEndian:
        stream.seek(origin)
        plain = dcmread(stream, stop_before_pixels=True, specific_tags=tags)
        return plain, stream.tell() - origin, False
    stream.seek(start)
    inflated = inflate_bounded(stream, max_inflated)
    end = stream.tell() - origin
    stream.seek(origin)
    preamble = stream.read(128)
    dataset = read_dataset(
        io.BytesIO(inflated),
        is_implicit_VR=False,
        is_little_endian=True,
        stop_when=_at_pixel_data,
        specific_tags=list(tags) if tags else None,
    )
    header = FileDataset("", dataset, preamble=preamble, file_meta=FileMetaDataset(meta))
    header.set_original_encoding(False, True, dataset._character_set)
    return header, end, True


def read_header(part10: bytes | BinaryIO, tags: list[BaseTag] | None = None) -> Dataset:
    """Parse a Part 10 object (bytes, or a seekable file at its start) up to (not including)
    the pixel data; only ``tags`` if given. A deflated data set is inflated with a bound
    (:data:`MAX_INFLATED_BYTES`).

    Raises:
        UnreadableDicomError: the bytes are not a readable DICOM Part 10 object.
    """
    try:
        return _dcmread(part10, tags=tags)[0]
    except _PARSE_ERRORS as exc:
        raise UnreadableDicomError(f"not a readable DICOM Part 10 object: {exc}") from exc


# PS3.5 7.1: the elements whose values are the image's pixels; a header ends where one begins.
_PIXEL_TAGS = frozenset(
    (
        b"\xe0\x7f\x10\x00",  # (7FE0,0010) Pixel Data, little endian
        b"\xe0\x7f\x08\x00",  # (7FE0,0008) Float Pixel Data
        b"\xe0\x7f\x09\x00",  # (7FE0,0009) Double Float Pixel Data
        b"\x7f\xe0\x00\x10",  # the same three, big endian
        b"\x7f\xe0\x00\x08",
        b"\x7f\xe0\x00\x09",
    )
)
# Deflated transfer syntaxes (PS3.5 A.5, 1.2.840.10008.1.2.8.1): the data set is compressed as
# a whole, so where parsing stopped in the stream says nothing about where the header ends.
DEFLATED_TRANSFER_SYNTAXES = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1"})


def split_header(data: bytes, complete: bool) -> tuple[Dataset, int] | None:
    """Parse the header at the start of a Part 10 object and say where it ends.

    pydicom parses a truncated prefix without complaint, so a prefix (``complete`` False)
    counts only when parsing stopped exactly at a Pixel Data element (PS3.5 7.1); a deflated
    object counts only whole. This is the one place that decides "these bytes hold the whole
    header": storage uses it to cut the header it puts in ``InstanceStored``, the indexer to
    know whether a ranged read of an object was long enough.

    Args:
        data: the first bytes of the object, or all of it.
        complete: True when ``data`` is the whole object.

    Returns:
        The header (without pixel data) and its length in bytes (``data[:length]`` parses to
        the same header; the whole object for a deflated one), or None when ``data`` is a
        prefix that may stop before the header ends.

    Raises:
        UnreadableDicomError: ``complete`` and the bytes are not readable DICOM.
    """
    try:
        dataset, position, deflated = _dcmread(data) if complete else _dcmread_prefix(data)
    except UnreadableDicomError:
        if complete:
            raise
        return None
    except _PARSE_ERRORS as exc:
        if complete:
            raise UnreadableDicomError(f"not a readable DICOM Part 10 object: {exc}") from exc
        return None
    if complete:
        return dataset, position
    if not deflated and data[position : position + 4] in _PIXEL_TAGS:
        return dataset, position
    return None


def _dcmread_prefix(data: bytes) -> tuple[Dataset, int, bool]:
    """:func:`_dcmread` of a prefix: a deflated prefix never counts, so it is not inflated."""
    stream = io.BytesIO(data)
    meta, _ = _meta_of(stream)
    if str(getattr(meta, "TransferSyntaxUID", "") or "") in DEFLATED_TRANSFER_SYNTAXES:
        return meta, len(data), True
    return _dcmread(data)


def read_truncated_header(prefix: bytes) -> Dataset:
    """The elements of a Part 10 prefix that cut an object without pixel data somewhere in
    its data set: every element that ended before the cut (the last one parsed may be cut
    short, so it is dropped, with anything nested in it).

    For objects whose data set is large and has no Pixel Data (an encapsulated document, a
    long structured report): their identifying attributes come first (tags ascend, PS3.5
    7.1), so a bounded prefix holds them, and reading the whole object would not be bounded.

    Raises:
        UnreadableDicomError: the prefix is not readable DICOM (or is deflated: a deflated
            object is read whole, with the inflation bound).
    """
    stream = io.BytesIO(prefix)
    try:
        meta, _ = _meta_of(stream)
        if str(getattr(meta, "TransferSyntaxUID", "") or "") in DEFLATED_TRANSFER_SYNTAXES:
            raise UnreadableDicomError("a deflated object cannot be read from a prefix")
        stream.seek(0)
        dataset = dcmread(stream, stop_before_pixels=True)
    except _PARSE_ERRORS as exc:
        raise UnreadableDicomError(f"not a readable DICOM Part 10 object: {exc}") from exc
    tags = list(dataset.keys())
    if tags:
        del dataset[tags[-1]]
    return dataset


def identifiers_of_part10(part10: bytes | BinaryIO) -> Identifiers:
    """The identifiers of a Part 10 object, checked (see :func:`identifiers_of`).

    Raises:
        UnreadableDicomError: the header cannot be parsed.
        InvalidArgumentError: a UID is missing or invalid, or the transfer syntax is absent.
    """
    dataset = read_header(part10, IDENTIFIER_TAGS)
    meta = getattr(dataset, "file_meta", None)
    transfer_syntax = str(getattr(meta, "TransferSyntaxUID", "") or "")
    if not transfer_syntax:
        raise InvalidArgumentError("file meta information has no TransferSyntaxUID (PS3.10 7.1)")
    return identifiers_of(dataset, transfer_syntax)


def instance_ref_of(part10: bytes | BinaryIO, tenant: str) -> instance_pb2.InstanceRef:
    """Address a Part 10 object: its checked UIDs under ``tenant``.

    Raises:
        UnreadableDicomError: the header cannot be parsed.
        InvalidArgumentError: a UID is missing or invalid, or the transfer syntax is absent.
    """
    ids = identifiers_of_part10(part10)
    return instance_pb2.InstanceRef(
        tenant=tenant,
        study_instance_uid=ids.study_instance_uid,
        series_instance_uid=ids.series_instance_uid,
        sop_instance_uid=ids.sop_instance_uid,
        sop_class_uid=ids.sop_class_uid,
        transfer_syntax_uid=ids.transfer_syntax_uid,
    )


def to_dicom_json(dataset: Dataset) -> dict[str, Any]:
    """A dataset as a DICOM JSON object (PS3.18 F.2) without bulk data: binary values
    (pixel data, overlays, waveforms) are left out rather than inlined. Written directly
    (:mod:`pacs_common.dicom_json`, the same output as pydicom's ``to_json_dict``, a third
    of its cost)."""
    return dicom_json(dataset)

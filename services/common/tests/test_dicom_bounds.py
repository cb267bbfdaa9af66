"""Reading DICOM headers with bounded work: deflated data sets inflate with a limit, and a
header can be read from a prefix of an object that has no pixel data (pacs_common.dicom)."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from pacs_common.dicom import (
    MAX_INFLATED_BYTES,
    UnreadableDicomError,
    inflate_bounded,
    instance_ref_of,
    read_header,
    read_truncated_header,
    split_header,
)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    generate_uid,
)

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _dataset(transfer_syntax: str) -> Dataset:
    dataset = Dataset()
    dataset.SOPClassUID = SECONDARY_CAPTURE
    dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.PatientName = "Bounded^Test"
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = transfer_syntax
    return dataset


def _part10(dataset: Dataset) -> bytes:
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _meta_prefix(transfer_syntax: str) -> bytes:
    """Preamble and file meta of a Part 10 object, without its data set."""
    whole = _part10(_dataset(transfer_syntax))
    stream = io.BytesIO(whole)
    from pydicom.filereader import _read_file_meta_info, read_preamble  # noqa: PLC0415

    read_preamble(stream, False)
    _read_file_meta_info(stream)
    return whole[: stream.tell()]


def test_a_deflated_object_reads_as_it_did() -> None:
    dataset = _dataset(DeflatedExplicitVRLittleEndian)
    part10 = _part10(dataset)
    header = read_header(part10)
    assert header.PatientName == "Bounded^Test"
    assert header.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    parsed = split_header(part10, complete=True)
    assert parsed is not None and parsed[1] == len(part10)
    assert split_header(part10[:-5], complete=False) is None
    assert instance_ref_of(part10, "t").sop_instance_uid == dataset.SOPInstanceUID


def test_a_deflate_bomb_is_refused_without_inflating_it() -> None:
    """300 MiB of zeros behind a private OB element deflate to about 300 KiB; reading the
    header refuses it as unreadable instead of inflating it all (pydicom alone would)."""
    size = MAX_INFLATED_BYTES + 44 * 1024**2
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    elements = (
        struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 2)
        + b"X "
        + struct.pack("<HH2sHL", 0x0009, 0x1010, b"OB", 0, size)
    )
    body = [deflater.compress(elements)]
    zeros = b"\0" * (1024 * 1024)
    for _ in range(size // len(zeros)):
        body.append(deflater.compress(zeros))
    body.append(deflater.flush())
    bomb = _meta_prefix(DeflatedExplicitVRLittleEndian) + b"".join(body)
    assert len(bomb) < 2 * 1024**2
    with pytest.raises(UnreadableDicomError, match="inflates past"):
        read_header(bomb)
    with pytest.raises(UnreadableDicomError):
        split_header(bomb, complete=True)
    with pytest.raises(UnreadableDicomError):
        inflate_bounded(b"not deflate data \xff\xff\xff\xff")


def test_a_large_object_without_pixel_data_has_its_header_read_from_a_prefix() -> None:
    dataset = _dataset(ExplicitVRLittleEndian)
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF
    dataset.add_new(0x00420011, "OB", b"%PDF" + b"\0" * (4 * 1024**2))
    part10 = _part10(dataset)
    header = read_truncated_header(part10[: 64 * 1024])
    assert header.PatientName == "Bounded^Test"
    assert header.SOPInstanceUID == dataset.SOPInstanceUID
    assert 0x00420011 not in header  # cut short: dropped, never a truncated value

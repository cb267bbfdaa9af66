"""Writing a de-identified dataset as a Part 10 file (PS3.10 7.1) without pydicom's per-element
overhead for the elements the walk left untouched.

pydicom's writer handles every element through the same general path (buffers, encoding checks,
value validation), which is most of the time de-identifying a small file takes; but most of a
file's elements are not named by Table E.1-1 and are still the raw bytes that were read. Those
are written here as tag, VR, length and the same value bytes (PS3.5 7.1.1/7.1.2); everything
the walk decoded or replaced, every sequence, and any element of undefined length goes through
pydicom's own ``write_data_element``. Big endian and deflated syntaxes are left to pydicom
entirely (:func:`write_part10` returns None).

The preamble is 128 zero bytes: an input's preamble may hold anything (a TIFF header, text),
and nothing of it is needed.
"""

from __future__ import annotations

import struct

from pydicom import __version__ as pydicom_version
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

# VRs with a 2-byte reserved field and a 4-byte length in explicit VR (PS3.5 Table 7.1-1).
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"})
VERSION_NAME = f"PYDICOM {pydicom_version}"[:16]


def _explicit(tag: int, vr: str, value: bytes) -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
    if vr in LONG_VRS:
        return head + b"\0\0" + struct.pack("<I", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _uid(value: str) -> bytes:
    data = value.encode("ascii")
    return data + b"\0" if len(data) % 2 else data


def _file_meta(sop_class: str, sop_instance: str, syntax: str) -> bytes:
    """Group 0002 with its group length (PS3.10 7.1); only the required elements and the
    implementation's: source/sending AE titles and private meta are left out on purpose."""
    version = VERSION_NAME.encode("ascii")
    version += b" " if len(version) % 2 else b""
    body = b"".join(
        (
            _explicit(0x00020001, "OB", b"\0\1"),
            _explicit(0x00020002, "UI", _uid(sop_class)),
            _explicit(0x00020003, "UI", _uid(sop_instance)),
            _explicit(0x00020010, "UI", _uid(syntax)),
            _explicit(0x00020012, "UI", _uid(PYDICOM_IMPLEMENTATION_UID)),
            _explicit(0x00020013, "SH", version),
        )
    )
    return _explicit(0x00020000, "UL", struct.pack("<I", len(body))) + body


def write_part10(ds: Dataset) -> bytes | None:
    """The Part 10 bytes of ``ds``, or None when pydicom's full writer is needed."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return None
    syntax = meta.get("TransferSyntaxUID")
    sop_class = meta.get("MediaStorageSOPClassUID")
    sop_instance = meta.get("MediaStorageSOPInstanceUID")
    if not (syntax and sop_class and sop_instance) or syntax.is_deflated:
        return None
    if not syntax.is_little_endian or ds.original_encoding != (syntax.is_implicit_VR, True):
        return None  # re-encoding: pydicom corrects ambiguous VRs on the way
    implicit = syntax.is_implicit_VR
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, implicit
    out.write(b"\0" * 128 + b"DICM" + _file_meta(str(sop_class), str(sop_instance), str(syntax)))
    encodings = ds.get("SpecificCharacterSet", "iso8859")
    for tag in sorted(ds.keys()):
        if tag.element == 0 and tag.group > 6:
            continue  # retired group lengths are not written (PS3.5 7.2)
        item = ds.get_item(tag)
        if (
            isinstance(item, RawDataElement)
            and isinstance(item.value, bytes)
            and item.length != 0xFFFFFFFF  # undefined length: pydicom writes the delimiters
            and (implicit or item.VR is not None)
            and item.VR != "SQ"
        ):
            if implicit:
                out.write(struct.pack("<HHI", tag.group, tag.element, len(item.value)))
                out.write(item.value)
            else:
                out.write(_explicit(int(tag), str(item.VR), item.value))
        else:
            write_data_element(out, ds[tag], encodings)
    return out.getvalue()

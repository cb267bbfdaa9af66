"""DICOM JSON (PS3.18 F.2) of a dataset's header, produced directly from its data elements.

Why not pydicom's ``Dataset.to_json_dict``: it is correct but costs about 7 µs per element
(every element recomputes its VM several times and passes through generic number conversion),
which made it the largest part of the indexer's CPU per instance (docs/performance.md). This
encoder writes the same JSON for the value types ``dcmread`` produces, about three times
faster, and hands every element it has no fast path for to pydicom's own
``DataElement.to_json_dict``, so the output is pydicom's in every case. An equivalence test
over every sample file pydicom ships (``services/common/tests/test_dicom_json.py``) holds the
two together.

Most elements are encoded straight from the bytes pydicom read (its raw elements), without
converting them to pydicom values first: that conversion (validation, value classes) was three
quarters of the encoder's cost on a CT header. The raw path takes only what it decodes exactly
as pydicom does (explicit VR little endian, the default, Latin-1 or UTF-8 character sets, well
formed numbers); every other element is converted by pydicom and encoded as above.

Bulk data (binary values longer than :data:`INLINE_BINARY_MAX` bytes) is left out as an empty
``BulkDataURI`` rather than inlined: the index keeps headers, and pixel data is never part of
one.
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Sequence
from typing import Any

from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import AMBIGUOUS_VR, BYTES_VR, FLOAT_VR, INT_VR, VR, PersonName

BULK_DATA_THRESHOLD = 1024
"""Length of base64 text above which a binary value becomes a BulkDataURI (as pydicom)."""
INLINE_BINARY_MAX = (BULK_DATA_THRESHOLD // 4) * 3
"""Longest binary value written inline (its base64 text fits the threshold)."""

_BINARY = frozenset((BYTES_VR | AMBIGUOUS_VR) - {VR.US_SS})
_INT = frozenset((INT_VR - {VR.AT}) | {VR.US_SS})
_FLOAT = frozenset(FLOAT_VR)
_SCALARS = (str, int, float)


def _no_bulk_data(_element: DataElement) -> str:
    return ""


def dicom_json(dataset: Dataset, inherited_encoding: str | None = "latin_1") -> dict[str, Any]:
    """``dataset`` as a DICOM JSON object without bulk data (the same as pydicom's
    ``to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=<empty URI>)``).

    ``inherited_encoding``: the text encoding of the enclosing data set, for a sequence item
    without a Specific Character Set of its own (None: one the raw path does not decode).
    """
    encoding = _encoding_of(dataset, inherited_encoding)
    result: dict[str, Any] = {}
    for element in dataset.elements():
        encoded = None
        if isinstance(element, RawDataElement) and encoding is not None:
            try:
                encoded = _raw_json(element, encoding)
            except (ValueError, struct.error, UnicodeDecodeError):
                encoded = None  # not decoded here exactly as pydicom would: pydicom decides
        if encoded is None:
            converted = dataset[element.tag]
            if converted.VR == VR.SQ:
                items = converted.value
                encoded = {"vr": VR.SQ, "Value": [dicom_json(item, encoding) for item in items]}
            else:
                encoded = _element_json(converted)
        result[f"{element.tag:08X}"] = encoded
    return result


# Specific Character Set values (PS3.3 C.12.1.1.2) whose text the raw path decodes: the
# default repertoire (pydicom decodes it as Latin-1), Latin-1 and UTF-8; others (ISO 2022 code
# extensions, other single-byte sets) go through pydicom.
_PLAIN_ENCODINGS = {"": "latin_1", "ISO_IR 6": "latin_1", "ISO_IR 100": "latin_1"}
_PLAIN_ENCODINGS["ISO_IR 192"] = "utf_8"
_CHARSET_TAG = 0x00080005


def _encoding_of(dataset: Dataset, inherited: str | None) -> str | None:
    if _CHARSET_TAG not in dataset:
        return inherited
    value = dataset.get_item(_CHARSET_TAG).value  # pydicom converts it while reading, or not
    if isinstance(value, bytes):
        value = value.decode("latin_1")
    if not isinstance(value, str):
        return None  # several character sets (code extensions)
    return _PLAIN_ENCODINGS.get(value.strip(" \x00"))


# What pydicom's value converters do (pydicom.values), for the VRs the raw path takes.
_TEXT_MULTI = frozenset({VR.SH, VR.LO, VR.UC})  # convert_text: split, strip each
_TEXT_SINGLE = frozenset({VR.ST, VR.LT, VR.UT})  # convert_single_string
_ASCII_MULTI = frozenset({VR.AS, VR.CS, VR.DA, VR.DT, VR.TM, VR.UI})  # multi_string
_STRUCTS: dict[str, str] = {
    VR.US: "H",
    VR.SS: "h",
    VR.UL: "I",
    VR.SL: "i",
    VR.FL: "f",
    VR.FD: "d",
    VR.SV: "q",
    VR.UV: "Q",
}
_RAW_BINARY = frozenset({VR.OB, VR.OW, VR.OD, VR.OF, VR.OL, VR.OV})
_NUMBER_STRINGS: dict[str, tuple[re.Pattern[str], type[int] | type[float]]] = {
    VR.IS: (re.compile(r"[+-]?[0-9]{1,12}"), int),
    VR.DS: (re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"), float),
}


def _raw_json(raw: RawDataElement, encoding: str) -> dict[str, Any] | None:  # noqa: PLR0911
    """The JSON of one element read from explicit VR little endian bytes, or None when the raw
    path does not take it (pydicom converts it then)."""
    vr = str(raw.VR)
    value = raw.value
    if raw.is_implicit_VR or not raw.is_little_endian or not isinstance(value, bytes):
        return None
    if vr in _RAW_BINARY:
        return _binary_json(vr, value)
    if vr not in _RAW_KINDS:
        return None
    if not value:
        return {"vr": vr}
    if vr in _STRUCTS:
        code = _STRUCTS[vr]
        numbers = struct.unpack(f"<{len(value) // struct.calcsize(code)}{code}", value)
        return {"vr": vr, "Value": list(numbers)}
    if vr == VR.PN:
        return _raw_names_json(value, encoding)
    if vr in _NUMBER_STRINGS:
        members = value.decode("latin_1").rstrip(" \x00").split("\\")
        pattern, number = _NUMBER_STRINGS[vr]
        if not all(pattern.fullmatch(member.strip()) for member in members):
            return None
        return {"vr": vr, "Value": [number(member) for member in members]}
    strings = _raw_strings(vr, value, encoding)
    if len(strings) == 1 and not strings[0]:
        return {"vr": vr}
    return {"vr": vr, "Value": strings}


def _raw_strings(vr: str, value: bytes, encoding: str) -> list[str]:
    """The members of a string value, split and stripped as pydicom.values does for ``vr``."""
    if vr in _TEXT_MULTI:
        return [v.rstrip("\x00 ") for v in value.decode(encoding).split("\\")]
    if vr in _TEXT_SINGLE:
        return [value.decode(encoding).rstrip("\x00 ")]
    if vr == VR.AE:
        return [v.strip() for v in value.decode("latin_1").split("\\")]
    return value.decode("latin_1").rstrip(" \x00").split("\\")  # _ASCII_MULTI


def _raw_names_json(value: bytes, encoding: str) -> dict[str, Any] | None:
    """PN values as component groups (PS3.18 F.2.2), as pydicom's PersonName splits them:
    groups at "=", trailing empty groups dropped."""
    members = value.rstrip(b"\x00 ").decode(encoding).split("\\")
    if len(members) == 1 and not members[0]:
        return {"vr": VR.PN}
    groups = []
    for member in members:
        components = member.split("=")
        while components and not components[-1]:
            components.pop()
        if not components:
            return None  # an empty name among several: pydicom's own (failing) encoding
        groups.append(_name_group(components))
    return {"vr": VR.PN, "Value": groups}


_RAW_KINDS = (
    _TEXT_MULTI | _TEXT_SINGLE | _ASCII_MULTI | frozenset(_STRUCTS) | {VR.AE, VR.IS, VR.DS, VR.PN}
)


def _many(value: Any) -> bool:
    """A multi-valued element's value (pydicom treats a one-member list as a single value)."""
    return isinstance(value, MultiValue) and len(value) != 1


def _element_json(element: DataElement) -> dict[str, Any]:  # noqa: PLR0911  (one exit per VR kind)
    """One converted element other than a sequence (:func:`dicom_json` encodes those)."""
    vr = element.VR
    value = element.value
    if vr in _BINARY:
        if isinstance(value, bytes):
            return _binary_json(vr, value)
    elif vr == VR.PN:
        if isinstance(value, PersonName):
            return _names_json(vr, [value] if value else [])
        if _many(value) and all(isinstance(name, PersonName) for name in value):
            return _names_json(vr, list(value))
    elif vr != VR.AT:
        if value is None or (isinstance(value, str) and not value):
            return {"vr": vr}
        if isinstance(value, _SCALARS):
            return {"vr": vr, "Value": _numbers(vr, [value])}
        if _many(value) and all(v is None or isinstance(v, _SCALARS) for v in value):
            return _values_json(vr, list(value))
    # Anything else (tags, buffered or unusual values): pydicom's own encoding.
    return element.to_json_dict(_no_bulk_data, BULK_DATA_THRESHOLD)


def _binary_json(vr: str, value: bytes) -> dict[str, Any]:
    if not value:
        return {"vr": vr}
    if len(value) > INLINE_BINARY_MAX:
        return {"vr": vr, "BulkDataURI": ""}
    return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}


def _names_json(vr: str, names: list[PersonName]) -> dict[str, Any]:
    """PN values as component groups (PS3.18 F.2.2)."""
    if not names:
        return {"vr": vr}
    return {"vr": vr, "Value": [_name_group(name.components) for name in names]}


def _name_group(components: Sequence[str]) -> dict[str, str]:
    """One PN value's component groups, by their DICOM JSON names (PS3.18 F.2.2)."""
    group = {"Alphabetic": components[0]}
    if len(components) > 1:
        group["Ideographic"] = components[1]
    if len(components) > 2:
        group["Phonetic"] = components[2]
    return group


def _values_json(vr: str, values: list[Any]) -> dict[str, Any]:
    if not values:
        return {"vr": vr}
    return {"vr": vr, "Value": _numbers(vr, values)}


def _numbers(vr: str, values: list[Any]) -> list[Any]:
    """Numeric VRs as JSON numbers (PS3.18 F.2.3); empty members as pydicom writes them."""
    if vr in _INT:
        return [int(v) if v is not None else empty_value_for_VR(vr) for v in values]
    if vr in _FLOAT:
        return [float(v) if v is not None else empty_value_for_VR(vr) for v in values]
    return values

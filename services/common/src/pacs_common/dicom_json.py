"""DICOM JSON (PS3.18 F.2) of a dataset's header, produced directly from its data elements.

Why not pydicom's ``Dataset.to_json_dict``: it is correct but costs about 7 µs per element
(every element recomputes its VM several times and passes through generic number conversion),
which made it the largest part of the indexer's CPU per instance (docs/performance.md). This
encoder writes the same JSON for the value types ``dcmread`` produces, about three times
faster, and hands every element it has no fast path for to pydicom's own
``DataElement.to_json_dict``, so the output is pydicom's in every case. An equivalence test
over every sample file pydicom ships (``services/common/tests/test_dicom_json.py``) holds the
two together.

Bulk data (binary values longer than :data:`INLINE_BINARY_MAX` bytes) is left out as an empty
``BulkDataURI`` rather than inlined: the index keeps headers, and pixel data is never part of
one.
"""

from __future__ import annotations

import base64
from typing import Any

from pydicom.dataelem import DataElement, empty_value_for_VR
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


def dicom_json(dataset: Dataset) -> dict[str, Any]:
    """``dataset`` as a DICOM JSON object without bulk data (the same as pydicom's
    ``to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=<empty URI>)``)."""
    return {f"{element.tag:08X}": _element_json(element) for element in dataset}


def _many(value: Any) -> bool:
    """A multi-valued element's value (pydicom treats a one-member list as a single value)."""
    return isinstance(value, MultiValue) and len(value) != 1


def _element_json(element: DataElement) -> dict[str, Any]:  # noqa: PLR0911  (one exit per VR kind)
    vr = element.VR
    value = element.value
    if vr == VR.SQ:
        return {"vr": vr, "Value": [dicom_json(item) for item in value]}
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
    groups = []
    for name in names:
        components = name.components
        group = {"Alphabetic": components[0]}
        if len(components) > 1:
            group["Ideographic"] = components[1]
        if len(components) > 2:
            group["Phonetic"] = components[2]
        groups.append(group)
    return {"vr": vr, "Value": groups}


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

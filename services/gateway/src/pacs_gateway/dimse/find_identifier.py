"""C-FIND identifiers to index queries, and index results back to C-FIND responses.

A C-FIND request identifier (PS3.4 C.4.1.1.3) lists keys: a key with a value is a matching key,
an empty one is universal matching, i.e. a return key (PS3.4 C.2.2.2.3). The index's
``Query.match`` has the same convention, so each key goes there as its keyword (or 8-hex-digit
tag) with its value in DICOM string form. Responses hold exactly the requested keys (empty when
the index has no value, PS3.4 C.4.1.1.3.2), the Query/Retrieve Level, the unique keys of the
level and above, and the Specific Character Set when non-ASCII text is returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pacs.query.v1 import query_service_pb2 as query_pb
from pacs.type.v1 import instance_pb2
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

from pacs_gateway.dimse import codes
from pacs_gateway.dimse.handler_base import DimseFailure

# PS3.4 C.6.1.1 (Patient Root) and C.6.2.1 (Study Root): levels of each information model.
LEVELS_PATIENT_ROOT = ("PATIENT", "STUDY", "SERIES", "IMAGE")
LEVELS_STUDY_ROOT = ("STUDY", "SERIES", "IMAGE")
UNIQUE_KEY = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}

QUERY_RETRIEVE_LEVEL = Tag(0x0008, 0x0052)
SPECIFIC_CHARACTER_SET = Tag(0x0008, 0x0005)
RETRIEVE_AE_TITLE = Tag(0x0008, 0x0054)
INSTANCE_AVAILABILITY = Tag(0x0008, 0x0056)
# Answered by the gateway itself (PS3.4 C.4.1.1.3.2, C.6.1.1.2), not sent to the index.
LOCAL_KEYS = {
    QUERY_RETRIEVE_LEVEL,
    SPECIFIC_CHARACTER_SET,
    RETRIEVE_AE_TITLE,
    INSTANCE_AVAILABILITY,
}
BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
TEXT_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC"}


class InvalidIdentifierError(DimseFailure):
    """The identifier cannot be evaluated; ``status`` is the failure to answer (C010 unless
    the identifier cannot be a query of its model at all, A900)."""

    def __init__(self, message: str, code: int = codes.INVALID_QUERY) -> None:
        super().__init__(code, message)


@dataclass(frozen=True)
class FindRequest:
    """A checked C-FIND identifier, ready to become index queries."""

    level: str
    identifier: Dataset
    match: dict[str, str] = field(default_factory=dict)
    return_keys: list[str] = field(default_factory=list)

    def query(self, tenant: str, limit: int = 0, offset: int = 0) -> query_pb.Query:
        """The index query for one page of results."""
        return query_pb.Query(
            tenant=tenant,
            match=self.match,
            return_keys=self.return_keys,
            limit=limit,
            offset=offset,
        )


def levels_of(model_uid: str) -> tuple[str, ...]:
    """The Query/Retrieve levels of an information model (PS3.4 C.6)."""
    return LEVELS_PATIENT_ROOT if model_uid in codes.PATIENT_ROOT_MODELS else LEVELS_STUDY_ROOT


def level_of(identifier: Dataset, model_uid: str) -> str:
    """The identifier's Query/Retrieve Level, checked against the model.

    Raises:
        InvalidIdentifierError: missing or not a level of this model (A900, PS3.4 C.4.1.1.4).
    """
    element = identifier.get(QUERY_RETRIEVE_LEVEL)
    level = str(element.value if element is not None and element.value else "").strip().upper()
    if level not in levels_of(model_uid):
        raise InvalidIdentifierError(
            "QueryRetrieveLevel missing or not valid for this model",
            codes.DATASET_DOES_NOT_MATCH_SOP_CLASS,
        )
    return level


def _key_name(element: DataElement) -> str:
    return element.keyword or f"{int(element.tag):08X}"


def _one_value(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace")
    return str(value)


def matching_string(element: DataElement) -> str:
    """An element's value in DICOM string form; "" for an empty (universal) key."""
    value = element.value
    if value is None or value == "":
        return ""
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(_one_value(v) for v in value)
    return _one_value(value)


def find_request_of(identifier: Dataset, model_uid: str) -> FindRequest:
    """Translate a C-FIND identifier into the index's terms.

    Sequences are return keys only: sequence matching (PS3.4 C.2.2.2.6) is not supported, so
    items with values are ignored rather than silently matched wrongly.

    Raises:
        InvalidIdentifierError: bad level, or an element that cannot be read.
    """
    level = level_of(identifier, model_uid)
    match: dict[str, str] = {}
    return_keys: list[str] = []
    try:
        for element in identifier:
            tag = BaseTag(element.tag)
            if tag.group < 0x0008 or tag in LOCAL_KEYS or element.VR in BINARY_VRS:
                continue
            if element.VR == "SQ":
                return_keys.append(_key_name(element))
                continue
            match[_key_name(element)] = matching_string(element).strip()
    except (ValueError, TypeError, KeyError, LookupError) as exc:
        raise InvalidIdentifierError(f"identifier element cannot be read: {exc}") from exc
    return FindRequest(level=level, identifier=identifier, match=match, return_keys=return_keys)


def dataset_of_json(text: str) -> Dataset:
    """A DICOM JSON object (PS3.18 F.2) as a dataset; bulk data references become empty."""
    return Dataset.from_json(text, bulk_data_uri_handler=lambda *_args: b"")


def instance_ref_of_match(text: str, tenant: str) -> instance_pb2.InstanceRef:
    """The address of an IMAGE-level index match (DICOM JSON) in ``tenant``."""
    match = dataset_of_json(text)
    return instance_pb2.InstanceRef(
        tenant=tenant,
        study_instance_uid=str(match.get("StudyInstanceUID", "")),
        series_instance_uid=str(match.get("SeriesInstanceUID", "")),
        sop_instance_uid=str(match.get("SOPInstanceUID", "")),
        sop_class_uid=str(match.get("SOPClassUID", "")),
    )


def _needs_unicode(dataset: Dataset) -> bool:
    for element in dataset.iterall():
        if element.VR in TEXT_VRS and element.value is not None:
            values = element.value if isinstance(element.value, MultiValue) else [element.value]
            if any(not str(v).isascii() for v in values):
                return True
    return False


def response_of(
    result: Dataset, request: FindRequest, ae_title: str, levels: tuple[str, ...]
) -> Dataset:
    """A C-FIND pending response identifier built from one index result.

    Args:
        result: the index's dataset for one match.
        request: the checked request (its identifier lists the keys to return).
        ae_title: our AE title, for Retrieve AE Title (PS3.4 C.4.1.1.3.2).
        levels: the model's levels, to add the unique keys of the level and above.
    """
    response = Dataset()
    for element in request.identifier:
        tag = BaseTag(element.tag)
        if tag.group < 0x0008 or tag in LOCAL_KEYS:
            continue
        if tag in result:
            response[tag] = result[tag]
        else:
            response.add_new(tag, element.VR, [] if element.VR == "SQ" else None)
    for level in levels[: levels.index(request.level) + 1]:
        keyword = UNIQUE_KEY[level]
        if keyword not in response and keyword in result:
            response[keyword] = result[keyword]
    response.QueryRetrieveLevel = request.level
    if RETRIEVE_AE_TITLE in request.identifier:
        response.RetrieveAETitle = ae_title
    if INSTANCE_AVAILABILITY in request.identifier:
        response.InstanceAvailability = "ONLINE"
    if _needs_unicode(response):
        response.SpecificCharacterSet = "ISO_IR 192"
    elif SPECIFIC_CHARACTER_SET in request.identifier:
        response.SpecificCharacterSet = request.identifier[SPECIFIC_CHARACTER_SET].value
    return response

"""QIDO-RS (PS3.18 10.6): search for studies, series and instances.

A QIDO request is turned into the indexer's identifier (:class:`pacs.query.v1.Query`): each
``{attributeID}={value}`` query parameter is a matching key evaluated with the indexer's C-FIND
matching rules (PS3.4 C.2.2.2: single value, list of UIDs, wildcard, range, universal), each
``includefield`` a return key; the level's default attributes (PS3.18 Table 6.7.1-2) are always
asked for. The answer is a DICOM JSON array (PS3.18 F.2) with a Retrieve URL per result.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pacs.query.v1 import query_service_pb2 as query_pb
from pacs_common.errors import InvalidArgumentError

from pacs_dicomweb.backend import Backend


class QidoLevel(Enum):
    """The three QIDO resources."""

    STUDY = "studies"
    SERIES = "series"
    INSTANCE = "instances"


# PS3.18 Table 6.7.1-2 (required attributes of each level's result), with the attributes OHIF's
# study list and series panel read (00080061, 00201208, 00201209, 00080090, 00081030, ...).
DEFAULT_RETURN_KEYS: dict[QidoLevel, tuple[str, ...]] = {
    QidoLevel.STUDY: (
        "SpecificCharacterSet",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "TimezoneOffsetFromUTC",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "StudyDescription",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    QidoLevel.SERIES: (
        "SpecificCharacterSet",
        "Modality",
        "TimezoneOffsetFromUTC",
        "SeriesDescription",
        "SeriesInstanceUID",
        "SeriesNumber",
        "SeriesDate",
        "SeriesTime",
        "NumberOfSeriesRelatedInstances",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
    ),
    QidoLevel.INSTANCE: (
        "SpecificCharacterSet",
        "SOPClassUID",
        "SOPInstanceUID",
        "TimezoneOffsetFromUTC",
        "InstanceNumber",
        "Rows",
        "Columns",
        "BitsAllocated",
        "NumberOfFrames",
    ),
}

# `includefield=all` (PS3.18 8.3.4.3): every attribute the index keeps for the level and above,
# plus, at the instance level, the common image attributes read from the stored header.
_ALL_EXTRA: dict[QidoLevel, tuple[str, ...]] = {
    QidoLevel.STUDY: ("IssuerOfPatientID", "PatientAge", "InstitutionName"),
    QidoLevel.SERIES: ("BodyPartExamined", "ProtocolName", "Manufacturer"),
    QidoLevel.INSTANCE: (
        "ImageType",
        "AcquisitionNumber",
        "ContentDate",
        "ContentTime",
        "PhotometricInterpretation",
        "SamplesPerPixel",
        "BitsStored",
        "PixelRepresentation",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "SliceLocation",
    ),
}

# Parameters of the request that are not attributes (PS3.18 8.3.4, 8.3.5; `_` is the cache
# buster some web clients add).
_CONTROL = {"includefield", "fuzzymatching", "limit", "offset", "_"}
_TAG_PATH = re.compile(r"^[0-9A-Fa-f]{8}(\.[0-9A-Fa-f]{8})+$")

RETRIEVE_URL = "00081190"
INSTANCE_AVAILABILITY = "00080056"


@dataclass
class QidoRequest:
    """A parsed QIDO request."""

    match: dict[str, str] = field(default_factory=dict)
    return_keys: list[str] = field(default_factory=list)
    limit: int = 0
    offset: int = 0
    fuzzy: bool = False


def _int_param(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidArgumentError(f"{name} must be a non-negative integer") from None
    if number < 0:
        raise InvalidArgumentError(f"{name} must be a non-negative integer")
    return number


def parse_request(
    params: Iterable[tuple[str, str]], level: QidoLevel, default_limit: int, max_limit: int
) -> QidoRequest:
    """Read the query parameters of a QIDO request (PS3.18 8.3.4).

    Raises:
        InvalidArgumentError: a malformed limit/offset/fuzzymatching, a sequence path (nested
            matching is not supported), or a repeated matching key.
    """
    # The levels above are returned too (PS3.18 10.6.3.3.2 requires them for searches across
    # studies; answering them within a study as well costs nothing and matches Orthanc).
    defaults: list[str] = []
    for upper in QidoLevel:
        defaults.extend(DEFAULT_RETURN_KEYS[upper])
        if upper == level:
            break
    request = QidoRequest(return_keys=defaults)
    limit: int | None = None
    for name, value in params:
        if name == "includefield":
            request.return_keys.extend(_included(value, level))
        elif name == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise InvalidArgumentError("fuzzymatching must be true or false")
            request.fuzzy = value.lower() == "true"
        elif name == "limit":
            limit = _int_param(name, value)
        elif name == "offset":
            request.offset = _int_param(name, value)
        elif name == "_":
            continue
        else:
            _check_attribute(name)
            if name in request.match:
                raise InvalidArgumentError(f"{name} is given twice; use a \\-separated list")
            request.match[name] = value
    request.limit = min(limit or default_limit, max_limit)
    # Keep order, drop repeats (the indexer answers each key once anyway).
    request.return_keys = list(dict.fromkeys(request.return_keys))
    return request


def _included(value: str, level: QidoLevel) -> list[str]:
    """The return keys of one ``includefield`` value (comma-separated, or ``all``)."""
    keys: list[str] = []
    for raw in value.split(","):
        item = raw.strip()
        if item.lower() == "all":
            for upper in QidoLevel:
                keys.extend(DEFAULT_RETURN_KEYS[upper])
                keys.extend(_ALL_EXTRA[upper])
                if upper == level:
                    break
        elif item:
            _check_attribute(item)
            keys.append(item)
    return keys


def _check_attribute(name: str) -> None:
    if _TAG_PATH.match(name) or "." in name:
        raise InvalidArgumentError(
            f"{name}: matching inside sequences is not supported (PS3.18 8.3.4.1)"
        )
    if not name or name in _CONTROL:
        raise InvalidArgumentError(f"{name!r} is not an attribute")


@dataclass
class QidoResult:
    """One page of results and the total number of matches."""

    datasets: list[dict[str, Any]]
    total: int


async def search(
    backend: Backend,
    tenant: str,
    level: QidoLevel,
    request: QidoRequest,
    scope: Mapping[str, str],
) -> QidoResult:
    """Run a search; ``scope`` holds the UIDs of the resource path (study, series)."""
    match = dict(request.match)
    for keyword, uid in scope.items():
        match[keyword] = uid  # the path wins over a query parameter (PS3.18 10.6.1.2)
    query = query_pb.Query(
        tenant=tenant,
        match=match,
        return_keys=request.return_keys,
        limit=request.limit,
        offset=request.offset,
        fuzzy_matching=request.fuzzy,
    )
    if level is QidoLevel.STUDY:
        response: Any = await backend.query.find_studies(query)
    elif level is QidoLevel.SERIES:
        response = await backend.query.find_series(query)
    else:
        response = await backend.query.find_instances(query)
    return QidoResult([json.loads(text) for text in response.datasets], response.total_count)


def _uid(dataset: Mapping[str, Any], tag: str) -> str:
    values = dataset.get(tag, {}).get("Value") or [""]
    return str(values[0])


def retrieve_path(dataset: Mapping[str, Any], level: QidoLevel) -> str:
    """The WADO-RS path of a result (PS3.18 10.6.3.3: Retrieve URL)."""
    path = f"/studies/{_uid(dataset, '0020000D')}"
    if level in (QidoLevel.SERIES, QidoLevel.INSTANCE):
        path += f"/series/{_uid(dataset, '0020000E')}"
    if level is QidoLevel.INSTANCE:
        path += f"/instances/{_uid(dataset, '00080018')}"
    return path


def decorate(dataset: dict[str, Any], level: QidoLevel, base_url: str) -> dict[str, Any]:
    """Add the Retrieve URL and Instance Availability (everything stored is ONLINE)."""
    dataset[RETRIEVE_URL] = {"vr": "UR", "Value": [base_url + retrieve_path(dataset, level)]}
    dataset[INSTANCE_AVAILABILITY] = {"vr": "CS", "Value": ["ONLINE"]}
    return dict(sorted(dataset.items()))

"""Field-by-field comparison with Orthanc's DICOMweb plugin holding the same instances:
the same QIDO-RS requests and series metadata requests to both, through dicomweb-client.

What may differ, and why (everything else must be equal):
- Retrieve URLs (0008,1190) name each server's own base URL;
- attributes one server returns empty and the other leaves out (PS3.18 allows both);
- attributes only one server returns at all (each has its own default list): listed, and the
  ones OHIF reads must be in ours.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from dicomweb_helpers import part10, series_from
from pacs_testkit.orthanc import OrthancDicomweb
from pydicom.uid import generate_uid

pytestmark = pytest.mark.asyncio(loop_scope="session")

RETRIEVE_URL = "00081190"
# Attributes OHIF reads from QIDO answers (references.md, OHIF qido.js).
OHIF_STUDY = {
    "0020000D",
    "00080020",
    "00080030",
    "00080050",
    "00100010",
    "00100020",
    "00100030",
    "00201208",
    "00081030",
    "00080061",
    "00080090",
}
OHIF_SERIES = {"0020000E", "00200011", "00201209", "0008103E", "00080060", "00080021"}


def _values(dataset: dict[str, Any]) -> dict[str, Any]:
    """Tag -> value of the attributes that carry one (not Retrieve URLs, not bulk data)."""
    return {
        tag: element.get("Value")
        for tag, element in dataset.items()
        if element.get("Value") not in (None, []) and tag != RETRIEVE_URL
    }


def _compare(
    ours: dict[str, Any], theirs: dict[str, Any], skip: frozenset[str] = frozenset()
) -> list[str]:
    a, b = _values(ours), _values(theirs)
    for tag in skip:
        a.pop(tag, None)
        b.pop(tag, None)
    return [
        f"{tag}: ours {a[tag]!r} orthanc {b[tag]!r}"
        for tag in a.keys() & b.keys()
        if a[tag] != b[tag]
    ]


# Patient and study attributes the two samples disagree on; one study must agree on them
# (otherwise each server is free to answer from another instance).
_SHARED = (
    "PatientSex",
    "PatientBirthDate",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "TimezoneOffsetFromUTC",
    "PatientAge",
    "PatientWeight",
)


def _consistent(objects: list[bytes]) -> list[bytes]:
    first = pydicom.dcmread(io.BytesIO(objects[0]))
    result = []
    for data in objects:
        dataset = pydicom.dcmread(io.BytesIO(data))
        for keyword in _SHARED:
            if keyword in first:
                setattr(dataset, keyword, first.data_element(keyword).value)
            elif keyword in dataset:
                delattr(dataset, keyword)
        result.append(part10(dataset))
    return result


@pytest.fixture(scope="module")
def orthanc() -> Any:
    with OrthancDicomweb() as peer:
        yield peer


async def test_qido_and_metadata_match_orthanc(
    client: DICOMwebClient, store: Any, orthanc: OrthancDicomweb
) -> None:
    study, ct, mr = generate_uid(), generate_uid(), generate_uid()
    objects = series_from(
        "CT_small.dcm", 3, study_uid=study, series_uid=ct, description="COMPARE", accession="A7"
    ) + series_from(
        "MR_small.dcm", 2, study_uid=study, series_uid=mr, description="COMPARE", accession="A7"
    )
    objects = _consistent(objects)
    await store(objects)
    for data in objects:
        await asyncio.to_thread(orthanc.upload, data)
    peer = DICOMwebClient(url=orthanc.dicomweb_url)
    fields = ["00081030", "00080060", "00080090", "00100030"]

    async def both(method: str, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        mine = await asyncio.to_thread(getattr(client, method), *args, **kwargs)
        theirs = await asyncio.to_thread(getattr(peer, method), *args, **kwargs)
        return mine, theirs

    mine, theirs = await both(
        "search_for_studies", search_filters={"StudyInstanceUID": study}, fields=fields
    )
    assert len(mine) == len(theirs) == 1
    assert _compare(mine[0], theirs[0]) == []
    assert set(_values(mine[0])) | {"00080090", "00100030"} >= OHIF_STUDY
    only_theirs = set(_values(theirs[0])) - set(_values(mine[0]))
    # Orthanc also returns SpecificCharacterSet (informative only: DICOM JSON is UTF-8) and,
    # at the study level, one instance's Modality; ours leaves the series-level Modality
    # empty there and answers ModalitiesInStudy (00080061), which OHIF reads first.
    assert only_theirs <= {"00080005", "00080060"}, only_theirs

    mine, theirs = await both("search_for_series", study, fields=["0008103E", "00080021"])
    assert len(mine) == len(theirs) == 2
    by_uid = {s["0020000E"]["Value"][0]: s for s in theirs}
    for series in mine:
        other = by_uid[series["0020000E"]["Value"][0]]
        assert _compare(series, other) == []
        assert OHIF_SERIES - {"0008103E", "00080021"} <= set(_values(series))
        assert set(_values(other)) - set(_values(series)) <= {"00080005"}

    mine, theirs = await both("search_for_instances", study, ct)
    assert len(mine) == len(theirs) == 3
    by_uid = {i["00080018"]["Value"][0]: i for i in theirs}
    for instance in mine:
        other = by_uid[instance["00080018"]["Value"][0]]
        assert _compare(instance, other) == []
        assert set(_values(other)) - set(_values(instance)) <= {"00080005"}

    mine, theirs = await both("retrieve_series_metadata", study, ct)
    assert len(mine) == len(theirs) == 3
    by_uid = {i["00080018"]["Value"][0]: i for i in theirs}
    for instance in mine:
        other = by_uid[instance["00080018"]["Value"][0]]
        # Every attribute of the stored header that Orthanc returns, we return identically.
        assert _compare(instance, other) == []
        missing = set(_values(other)) - set(_values(instance))
        assert missing <= {"00080005"}, missing

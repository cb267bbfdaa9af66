"""C-FIND identifier <-> index query translation (no network)."""

from __future__ import annotations

import json

import pytest
from pacs_gateway.dimse import codes
from pacs_gateway.dimse.codes import PATIENT_ROOT_FIND, STUDY_ROOT_FIND
from pacs_gateway.dimse.find_identifier import (
    InvalidIdentifierError,
    dataset_of_json,
    find_request_of,
    levels_of,
    response_of,
)
from pydicom.dataset import Dataset


def _study_identifier() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = "DOE^J*"
    ds.PatientID = ""
    ds.StudyDate = "20240101-20240131"
    ds.ModalitiesInStudy = ["CT", "MR"]
    ds.StudyInstanceUID = ""
    ds.NumberOfStudyRelatedInstances = None
    ds.ReferencedStudySequence = []
    ds.RetrieveAETitle = ""
    ds.SpecificCharacterSet = "ISO_IR 100"
    return ds


def test_matching_and_universal_keys_become_query_match() -> None:
    request = find_request_of(_study_identifier(), STUDY_ROOT_FIND)
    query = request.query("tenant-a", limit=10, offset=20)

    assert request.level == "STUDY"
    assert dict(query.match) == {
        "PatientName": "DOE^J*",
        "PatientID": "",
        "StudyDate": "20240101-20240131",
        "ModalitiesInStudy": "CT\\MR",
        "StudyInstanceUID": "",
        "NumberOfStudyRelatedInstances": "",
    }
    assert list(query.return_keys) == ["ReferencedStudySequence"]
    assert (query.tenant, query.limit, query.offset) == ("tenant-a", 10, 20)


def test_private_and_unknown_tags_travel_as_hex() -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.add_new(0x00091010, "LO", "x")
    request = find_request_of(ds, STUDY_ROOT_FIND)
    assert request.match == {"00091010": "x"}


@pytest.mark.parametrize(
    ("model", "level"),
    [
        (STUDY_ROOT_FIND, "PATIENT"),
        (STUDY_ROOT_FIND, "FRAME"),
        (PATIENT_ROOT_FIND, ""),
    ],
)
def test_level_not_in_model_is_identifier_does_not_match(model: str, level: str) -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    with pytest.raises(InvalidIdentifierError) as info:
        find_request_of(ds, model)
    assert info.value.status == codes.DATASET_DOES_NOT_MATCH_SOP_CLASS


def test_missing_level_is_refused() -> None:
    ds = Dataset()
    ds.PatientName = "X"
    with pytest.raises(InvalidIdentifierError):
        find_request_of(ds, PATIENT_ROOT_FIND)


def test_patient_root_has_four_levels() -> None:
    assert levels_of(PATIENT_ROOT_FIND) == ("PATIENT", "STUDY", "SERIES", "IMAGE")
    assert levels_of(STUDY_ROOT_FIND) == ("STUDY", "SERIES", "IMAGE")


def _result_json(name: str) -> str:
    return json.dumps(
        {
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]},
            "00100020": {"vr": "LO", "Value": ["PID-1"]},
            "00080020": {"vr": "DA", "Value": ["20240115"]},
            "00080061": {"vr": "CS", "Value": ["CT"]},
            "0020000D": {"vr": "UI", "Value": ["1.2.3.4"]},
            "00081030": {"vr": "LO", "Value": ["not requested"]},
        }
    )


def test_response_holds_requested_keys_only_plus_level() -> None:
    request = find_request_of(_study_identifier(), STUDY_ROOT_FIND)
    response = response_of(
        dataset_of_json(_result_json("DOE^JOHN")), request, "CLOUDPACS", levels_of(STUDY_ROOT_FIND)
    )

    assert response.QueryRetrieveLevel == "STUDY"
    assert str(response.PatientName) == "DOE^JOHN"
    assert response.PatientID == "PID-1"
    assert response.StudyInstanceUID == "1.2.3.4"
    assert response.RetrieveAETitle == "CLOUDPACS"
    assert "StudyDescription" not in response
    # requested but unknown to the index: present and empty (PS3.4 C.4.1.1.3.2)
    assert "NumberOfStudyRelatedInstances" in response
    assert response["NumberOfStudyRelatedInstances"].is_empty
    assert response.ReferencedStudySequence == []
    assert response.SpecificCharacterSet == "ISO_IR 100"


def test_non_ascii_result_is_sent_as_utf8() -> None:
    request = find_request_of(_study_identifier(), STUDY_ROOT_FIND)
    response = response_of(
        dataset_of_json(_result_json("MÜLLER^JÜRGEN")),
        request,
        "CLOUDPACS",
        levels_of(STUDY_ROOT_FIND),
    )
    assert response.SpecificCharacterSet == "ISO_IR 192"
    assert str(response.PatientName) == "MÜLLER^JÜRGEN"


def test_series_response_carries_unique_keys_of_upper_levels() -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.Modality = ""
    request = find_request_of(ds, STUDY_ROOT_FIND)
    result = dataset_of_json(
        json.dumps(
            {
                "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
                "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]},
                "00080060": {"vr": "CS", "Value": ["MR"]},
            }
        )
    )
    response = response_of(result, request, "CLOUDPACS", levels_of(STUDY_ROOT_FIND))
    assert response.StudyInstanceUID == "1.2.3"
    assert response.SeriesInstanceUID == "1.2.3.4"
    assert response.Modality == "MR"

"""QIDO-RS and WADO-RS metadata through dicomweb-client (PyPI), on the real stack."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_helpers import series_from
from pydicom.uid import generate_uid

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _value(dataset: dict[str, Any], tag: str) -> Any:
    return (dataset.get(tag, {}).get("Value") or [None])[0]


async def test_study_search_answers_what_ohif_reads(client: DICOMwebClient, store: Any) -> None:
    study = generate_uid()
    await store(
        series_from("CT_small.dcm", 3, study_uid=study, patient="SMITH^ANN", description="CHEST")
        + series_from("MR_small.dcm", 2, study_uid=study, patient="SMITH^ANN")
    )
    # The exact parameters OHIF's study list sends (extensions/default/.../qido.js).
    found = await asyncio.to_thread(
        client.search_for_studies,
        search_filters={"PatientName": "*smith*"},
        fields=["00081030", "00080060", "00080090", "00100030"],
        fuzzymatching=True,
        limit=101,
        offset=0,
    )
    assert len(found) == 1
    result = found[0]
    assert _value(result, "0020000D") == study
    assert _value(result, "00100010") == {"Alphabetic": "SMITH^ANN"}
    assert _value(result, "00081030") == "CHEST"
    assert result["00201208"]["Value"] == [5]  # NumberOfStudyRelatedInstances
    assert result["00201206"]["Value"] == [2]  # NumberOfStudyRelatedSeries
    assert sorted(result["00080061"]["Value"]) == ["CT", "MR"]  # ModalitiesInStudy
    assert result["00081190"]["Value"][0].endswith(f"/studies/{study}")
    assert _value(result, "00080056") == "ONLINE"


async def test_series_and_instance_search_at_every_level(
    client: DICOMwebClient, store: Any
) -> None:
    study, ct, mr = generate_uid(), generate_uid(), generate_uid()
    await store(
        series_from("CT_small.dcm", 3, study_uid=study, series_uid=ct)
        + series_from("MR_small.dcm", 2, study_uid=study, series_uid=mr)
    )
    series = await asyncio.to_thread(
        client.search_for_series, study, fields=["0008103E", "00080021"]
    )
    assert {_value(s, "0020000E"): s["00201209"]["Value"][0] for s in series} == {ct: 3, mr: 2}
    assert {_value(s, "00080060") for s in series} == {"CT", "MR"}
    # /series (all studies) with a matching key, /instances, /studies/{s}/instances
    only_mr = await asyncio.to_thread(client.search_for_series, search_filters={"Modality": "MR"})
    assert [_value(s, "0020000E") for s in only_mr] == [mr]
    in_series = await asyncio.to_thread(client.search_for_instances, study, ct)
    assert len(in_series) == 3
    assert all(i["00081190"]["Value"][0].endswith(_value(i, "00080018")) for i in in_series)
    in_study = await asyncio.to_thread(client.search_for_instances, study)
    assert len(in_study) == 5
    everywhere = await asyncio.to_thread(
        client.search_for_instances, search_filters={"SeriesInstanceUID": mr}
    )
    assert len(everywhere) == 2
    assert {_value(i, "00280010") for i in everywhere} == {64}  # Rows, a default attribute


async def test_limit_offset_and_includefield_all(client: DICOMwebClient, store: Any) -> None:
    study = generate_uid()
    await store(series_from("CT_small.dcm", 5, study_uid=study))
    numbers = []
    for offset in (0, 2, 4):
        page = await asyncio.to_thread(client.search_for_instances, study, limit=2, offset=offset)
        numbers += [_value(i, "00200013") for i in page]
    assert sorted(numbers) == [1, 2, 3, 4, 5]
    everything = await asyncio.to_thread(
        client.search_for_instances, study, fields=["all"], limit=1
    )
    assert "00200032" in everything[0]  # ImagePositionPatient, from the stored header
    assert "00100010" in everything[0]  # patient level comes with `all`


async def test_matching_rules_of_c_find(client: DICOMwebClient, store: Any) -> None:
    first, second = generate_uid(), generate_uid()
    await store(
        series_from(
            "CT_small.dcm",
            1,
            study_uid=first,
            accession="ACC1",
            patient="ROE^JANE",
            patient_id="P1",
        )
        + series_from(
            "CT_small.dcm",
            1,
            study_uid=second,
            accession="ACC2",
            patient="ROE^JIM",
            patient_id="P2",
        )
    )
    by_list = await asyncio.to_thread(
        client.search_for_studies, search_filters={"StudyInstanceUID": f"{first}\\{second}"}
    )
    assert len(by_list) == 2
    wildcard = await asyncio.to_thread(
        client.search_for_studies, search_filters={"PatientName": "ROE^J?M"}
    )
    assert [_value(s, "0020000D") for s in wildcard] == [second]
    exact = await asyncio.to_thread(
        client.search_for_studies, search_filters={"AccessionNumber": "ACC1"}
    )
    assert [_value(s, "0020000D") for s in exact] == [first]
    # CT_small's StudyDate is 20040119: a range around it matches both, one after it none.
    in_range = await asyncio.to_thread(
        client.search_for_studies,
        search_filters={"StudyDate": "20040101-20040131", "PatientName": "ROE*"},
    )
    assert len(in_range) == 2
    after = await asyncio.to_thread(
        client.search_for_studies,
        search_filters={"StudyDate": "20050101-", "PatientName": "ROE*"},
    )
    assert after == []
    case_folded = await asyncio.to_thread(
        client.search_for_studies, search_filters={"PatientName": "roe^jane"}, fuzzymatching=True
    )
    assert [_value(s, "0020000D") for s in case_folded] == [first]


async def test_bad_queries_are_400(dicomweb_app: Any, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    for query in ("limit=-1", "NotAnAttribute=1", "fuzzymatching=maybe", "00081115.00081150=1"):
        response = await asyncio.to_thread(
            requests.get, f"{dicomweb_app.url}/studies?{query}", headers=headers, timeout=30
        )
        assert response.status_code == 400, query
    bad_uid = await asyncio.to_thread(
        requests.get, f"{dicomweb_app.url}/studies/1.2.x/series", headers=headers, timeout=30
    )
    assert bad_uid.status_code == 400


async def test_series_metadata_comes_from_the_index(client: DICOMwebClient, store: Any) -> None:
    study, series = generate_uid(), generate_uid()
    objects = series_from("CT_small.dcm", 4, study_uid=study, series_uid=series)
    await store(objects)
    metadata = await asyncio.to_thread(client.retrieve_series_metadata, study, series)
    assert len(metadata) == 4
    assert [_value(m, "00200013") for m in metadata] == [1, 2, 3, 4]
    assert all(_value(m, "00280010") == 128 for m in metadata)
    assert all(m["7FE00010"]["BulkDataURI"].endswith("/bulkdata/7FE00010") for m in metadata)
    study_metadata = await asyncio.to_thread(client.retrieve_study_metadata, study)
    assert len(study_metadata) == 4
    one = await asyncio.to_thread(
        client.retrieve_instance_metadata, study, series, _value(metadata[0], "00080018")
    )
    assert _value(one, "00080018") == _value(metadata[0], "00080018")


async def test_unknown_study_is_404_and_other_tenants_see_nothing(
    dicomweb_app: Any, client: DICOMwebClient, store: Any, hydra: Any
) -> None:
    study = generate_uid()
    await store(series_from("CT_small.dcm", 1, study_uid=study))
    other_headers = {"Authorization": f"Bearer {hydra.token('tother', ['query', 'retrieve'])}"}
    other = DICOMwebClient(url=dicomweb_app.url, headers=other_headers)
    assert (
        await asyncio.to_thread(
            other.search_for_studies, search_filters={"StudyInstanceUID": study}
        )
        == []
    )
    response = await asyncio.to_thread(
        requests.get,
        f"{dicomweb_app.url}/studies/{study}/metadata",
        headers=other_headers,
        timeout=30,
    )
    assert response.status_code == 404
    unknown = await asyncio.to_thread(
        requests.get,
        f"{dicomweb_app.url}/studies/{generate_uid()}/series/{generate_uid()}/metadata",
        headers={"Authorization": client._session.headers["Authorization"]},
        timeout=30,
    )
    assert unknown.status_code == 404

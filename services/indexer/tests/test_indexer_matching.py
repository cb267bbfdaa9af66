"""Query matching per PS3.4 C.2.2.2, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from indexer_helpers import Catalog, make_instance, values
from pacs_common.errors import InvalidArgumentError, ResourceExhaustedError
from pacs_indexer.attributes import Level
from pacs_indexer.query import FindQuery
from pydicom.uid import generate_uid

PATIENTS = [
    # name, id, study date, study time, accession, modality
    ("DOE^JOHN", "P1", "20240110", "093000", "ACC1", "CT"),
    ("DOE^JANE", "P2", "20240115", "140000", "ACC2", "MR"),
    ("SMITH^ANNA", "P3", "20240201", "080000", "ACC3", "CT"),
    ("doe^lower", "P4", "20231231", "235959", "ACC_4", "US"),
]


@pytest.fixture
def loaded(catalog: Catalog, tenant: str) -> dict[str, str]:
    """Four patients with one study each; returns accession -> StudyInstanceUID."""
    studies = {}
    for name, pid, date, time, accession, modality in PATIENTS:
        ds = make_instance(
            PatientName=name,
            PatientID=pid,
            StudyDate=date,
            StudyTime=time,
            AccessionNumber=accession,
            Modality=modality,
        )
        catalog.add(tenant, ds)
        studies[accession] = ds.StudyInstanceUID
    return studies


def _accessions(catalog: Catalog, tenant: str, **match: str) -> list[str]:
    fuzzy = match.pop("fuzzy", "") == "yes"
    result = catalog.find(
        FindQuery(
            tenant=tenant,
            level=Level.STUDY,
            match={"AccessionNumber": "", **match},
            fuzzy=fuzzy,
        )
    )
    assert result.total_count == len(result.datasets)
    return sorted(values(d, "00080050")[0] for d in result.datasets)


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ({"PatientName": "DOE^JOHN"}, ["ACC1"]),
        ({"PatientName": "DOE^JO"}, []),  # single value matching is exact
        ({"PatientName": "DOE*"}, ["ACC1", "ACC2"]),  # case-sensitive by default
        ({"PatientName": "DOE*", "fuzzy": "yes"}, ["ACC1", "ACC2", "ACC_4"]),
        ({"PatientName": "doe^john", "fuzzy": "yes"}, ["ACC1"]),
        ({"PatientName": "D?E^JA*"}, ["ACC2"]),
        ({"PatientName": "*"}, ["ACC1", "ACC2", "ACC3", "ACC_4"]),
        ({"PatientName": ""}, ["ACC1", "ACC2", "ACC3", "ACC_4"]),
        ({"PatientID": "P3"}, ["ACC3"]),
        ({"AccessionNumber": "ACC_*"}, ["ACC_4"]),  # '_' is literal, not a LIKE wildcard
        ({"StudyDate": "20240115"}, ["ACC2"]),
        ({"StudyDate": "20240101-20240131"}, ["ACC1", "ACC2"]),
        ({"StudyDate": "20240115-"}, ["ACC2", "ACC3"]),
        ({"StudyDate": "-20240110"}, ["ACC1", "ACC_4"]),
        ({"StudyTime": "0800-1000"}, ["ACC1", "ACC3"]),
        ({"StudyTime": "14-"}, ["ACC2", "ACC_4"]),
        ({"StudyDate": "20240101-", "StudyTime": "-0930"}, ["ACC1", "ACC3"]),
        ({"ModalitiesInStudy": "CT"}, ["ACC1", "ACC3"]),
        ({"ModalitiesInStudy": "MR\\US"}, ["ACC2", "ACC_4"]),
    ],
)
def test_study_matching(
    catalog: Catalog,
    tenant: str,
    loaded: dict[str, str],
    match: dict[str, str],
    expected: list[str],
) -> None:
    assert _accessions(catalog, tenant, **match) == expected


def test_uid_list_matching(catalog: Catalog, tenant: str, loaded: dict[str, str]) -> None:
    wanted = f"{loaded['ACC1']}\\{loaded['ACC3']}\\{generate_uid()}"
    assert _accessions(catalog, tenant, StudyInstanceUID=wanted) == ["ACC1", "ACC3"]


@pytest.mark.parametrize(
    "match",
    [
        {"NoSuchKeyword": "x"},
        {"StudyDate": "2024-01-01"},
        {"StudyDate": "20240101-20240131-20240201"},
        {"StudyTime": "25"},
        {"StudyInstanceUID": "1.2.*"},
        {"SeriesInstanceUID": "1.2.3"},  # below the study level
    ],
)
def test_bad_queries_are_invalid_arguments(
    catalog: Catalog, tenant: str, match: dict[str, str]
) -> None:
    with pytest.raises(InvalidArgumentError):
        catalog.find(FindQuery(tenant=tenant, level=Level.STUDY, match=match))


def test_results_hold_unique_matching_and_return_keys(
    catalog: Catalog, tenant: str, loaded: dict[str, str]
) -> None:
    result = catalog.find(
        FindQuery(
            tenant=tenant,
            level=Level.STUDY,
            match={"PatientID": "P1", "00100010": ""},
            return_keys=["StudyDate", "00100040", "InstitutionName"],
        )
    )
    (dataset,) = result.datasets
    assert dataset["0020000D"] == {"vr": "UI", "Value": [loaded["ACC1"]]}
    assert dataset["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "DOE^JOHN"}]}
    assert dataset["00100020"] == {"vr": "LO", "Value": ["P1"]}
    assert dataset["00080020"] == {"vr": "DA", "Value": ["20240110"]}
    assert dataset["00100040"] == {"vr": "CS"}  # PatientSex: asked for, empty
    assert dataset["00080080"] == {"vr": "LO"}  # InstitutionName: not in the header
    assert dataset["00080061"] == {"vr": "CS", "Value": ["CT"]}
    assert dataset["00201208"] == {"vr": "IS", "Value": [1]}
    assert "00081030" not in dataset  # StudyDescription: neither matched nor asked for


def test_paging_is_stable_and_counts_everything(
    catalog: Catalog, tenant: str, loaded: dict[str, str]
) -> None:
    pages = []
    for offset in range(0, 4, 3):
        result = catalog.find(FindQuery(tenant=tenant, level=Level.STUDY, limit=3, offset=offset))
        assert result.total_count == 4
        pages.append([values(d, "0020000D")[0] for d in result.datasets])
    assert [len(p) for p in pages] == [3, 1]
    # newest study first
    assert [pages[0][0], pages[1][0]] == [loaded["ACC3"], loaded["ACC_4"]]


def test_too_broad_query_is_refused_without_a_limit(
    catalog: Catalog, tenant: str, loaded: dict[str, str]
) -> None:
    with pytest.raises(ResourceExhaustedError, match="more than the maximum of 3"):
        catalog.find(FindQuery(tenant=tenant, level=Level.STUDY), max_results=3)
    limited = catalog.find(FindQuery(tenant=tenant, level=Level.STUDY, limit=2), max_results=3)
    assert (len(limited.datasets), limited.total_count) == (2, 4)


def test_series_and_instance_levels(catalog: Catalog, tenant: str) -> None:
    study, series = generate_uid(), generate_uid()
    for number in (3, 1, 2):
        catalog.add(
            tenant,
            make_instance(
                study, series, InstanceNumber=number, SeriesNumber=7, PatientName="LEVEL^TEST"
            ),
        )
    catalog.add(
        tenant, make_instance(study, Modality="SR", SeriesNumber=1, PatientName="LEVEL^TEST")
    )
    found = catalog.find(
        FindQuery(
            tenant=tenant,
            level=Level.SERIES,
            match={"StudyInstanceUID": study, "Modality": "CT"},
            return_keys=["SeriesNumber"],
        )
    )
    assert [values(d, "0020000E") for d in found.datasets] == [[series]]
    assert values(found.datasets[0], "00200011") == [7]
    assert values(found.datasets[0], "00201209") == [3]
    instances = catalog.find(
        FindQuery(
            tenant=tenant,
            level=Level.IMAGE,
            match={"SeriesInstanceUID": series, "PatientName": "LEVEL^*"},
            return_keys=["InstanceNumber", "SOPClassUID", "Modality"],
        )
    )
    assert [values(d, "00200013") for d in instances.datasets] == [[1], [2], [3]]
    assert all(values(d, "0020000D") == [study] for d in instances.datasets)
    assert all(values(d, "00080060") == ["CT"] for d in instances.datasets)


def test_instance_level_returns_any_attribute_of_the_header(catalog: Catalog, tenant: str) -> None:
    ds = make_instance(Rows=512, Columns=256, InstitutionName="GENERAL HOSPITAL")
    catalog.add(tenant, ds)
    (dataset,) = catalog.find(
        FindQuery(
            tenant=tenant,
            level=Level.IMAGE,
            match={"SOPInstanceUID": ds.SOPInstanceUID},
            return_keys=["Rows", "00280011", "InstitutionName"],
        )
    ).datasets
    assert dataset["00280010"] == {"vr": "US", "Value": [512]}
    assert dataset["00280011"] == {"vr": "US", "Value": [256]}
    study = catalog.find(
        FindQuery(tenant=tenant, level=Level.STUDY, return_keys=["InstitutionName"])
    )
    assert values(study.datasets[0], "00080080") == ["GENERAL HOSPITAL"]


@pytest.mark.parametrize(
    ("date", "time", "expected"),
    [
        # PS3.4 C.2.2.2.5.1: one range from the first date at the first time to the last
        # date at the last time
        ("20240110-20240115", "1000-1500", ["ACC2"]),
        ("20240110-20240115", "0900-1500", ["ACC1", "ACC2"]),
        ("20240101-20240201", "1000-0800", ["ACC1", "ACC2", "ACC3"]),
        ("20240115-", "1500-", ["ACC3"]),
        ("-20240110", "-0900", ["ACC_4"]),
        ("20240110", "", ["ACC1"]),
    ],
)
def test_combined_date_time_matching(
    catalog: Catalog,
    tenant: str,
    loaded: dict[str, str],
    date: str,
    time: str,
    expected: list[str],
) -> None:
    result = catalog.find(
        FindQuery(
            tenant=tenant,
            level=Level.STUDY,
            match={"StudyDate": date, "StudyTime": time, "AccessionNumber": ""},
            combined_datetime=True,
        )
    )
    assert sorted(values(d, "00080050")[0] for d in result.datasets) == expected


def test_empty_value_matching(catalog: Catalog, tenant: str) -> None:
    catalog.add(tenant, make_instance(PatientID="E1", StudyDescription="DESCRIBED"))
    catalog.add(tenant, make_instance(PatientID="E2"))
    catalog.add(tenant, make_instance(PatientID="E3", SeriesNumber=4))
    described = catalog.find(
        FindQuery(tenant=tenant, level=Level.STUDY, match={"StudyDescription": '""'})
    )
    assert described.total_count == 2
    unnumbered = catalog.find(
        FindQuery(tenant=tenant, level=Level.SERIES, match={"SeriesNumber": '""'})
    )
    assert unnumbered.total_count == 2

"""The order of query results does not depend on how many studies match, on SQLite and
PostgreSQL.

A query with few matches is answered by sorting all of them, one with many by walking an index
that is already in the result order (see ``pacs_indexer.query._order``). Both must give the same
results in the same order, page by page. The tests run each query once with every page sorted
from the matches and once with the index order wherever a page does not reach the last match.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from indexer_helpers import Catalog, make_instance, values
from pacs_indexer import query
from pacs_indexer.attributes import Level
from pacs_indexer.query import FindQuery
from pydicom.uid import generate_uid

# (accession, patient name, study date, study time), in the order they are indexed.
STUDIES = [
    ("A1", "ORDER^ONE", "20240110", "093000"),
    ("A2", "OTHER^ONE", "20240301", "120000"),
    ("A3", "ORDER^TWO", "20240110", "093000"),  # same date and time as A1, indexed later
    ("A4", "ORDER^THREE", "20240110", "1400"),
    ("A5", "OTHER^TWO", "20240110", "100000"),
    ("A6", "ORDER^FOUR", "", ""),  # no date: after every dated study
    ("A7", "ORDER^FIVE", "20250101", ""),
    ("A8", "ORDER^SIX", "20240110", ""),  # no time: after the same day's timed studies
]
# Newest first; equal date and time, the study indexed last first.
ORDERED = ["A7", "A4", "A3", "A1", "A8", "A6"]


@pytest.fixture(params=["few", "many"])
def matches(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Sort the matches for every page ("few"), or only for pages reaching the last match."""
    monkeypatch.setattr(query, "_SORT_MATCHES_UP_TO", 10**6 if request.param == "few" else 0)
    return str(request.param)


def _pages(catalog: Catalog, spec: FindQuery, tag: str, limit: int) -> list[list[str]]:
    """The values of ``tag`` in each page of ``limit`` results."""
    pages = []
    for offset in range(0, catalog.find(spec).total_count, limit):
        page = catalog.find(replace(spec, limit=limit, offset=offset))
        pages.append([values(d, tag)[0] for d in page.datasets])
    return pages


def test_studies_come_newest_first_in_pages_whatever_the_number_of_matches(
    catalog: Catalog, tenant: str, matches: str
) -> None:
    for accession, name, date, time in STUDIES:
        catalog.add(
            tenant,
            make_instance(
                PatientName=name, StudyDate=date, StudyTime=time, AccessionNumber=accession
            ),
        )
    spec = FindQuery(
        tenant=tenant, level=Level.STUDY, match={"PatientName": "ORDER^*", "AccessionNumber": ""}
    )
    everything = catalog.find(spec)
    assert [values(d, "00080050")[0] for d in everything.datasets] == ORDERED
    assert _pages(catalog, spec, "00080050", limit=2) == [
        ORDERED[0:2],
        ORDERED[2:4],
        ORDERED[4:6],
    ]
    assert _pages(catalog, spec, "00080050", limit=4) == [ORDERED[0:4], ORDERED[4:6]]


def test_series_and_instances_come_by_number_whatever_the_number_of_matches(
    catalog: Catalog, tenant: str, matches: str
) -> None:
    studies = [generate_uid(), generate_uid()]
    # Per study, (SeriesNumber, Modality) in the order indexed; None: no number, ordered last.
    layout: list[list[tuple[int | None, str]]] = [
        [(2, "CT"), (None, "CT"), (1, "MR")],
        [(1, "CT"), (1, "CT")],
    ]
    series_order: list[str] = []  # the CT series, in the expected order
    instance_order: dict[str, list[str]] = {}  # per series, its instances in order
    for study, series_list in zip(studies, layout, strict=True):
        numbered = []
        for index, (number, modality) in enumerate(series_list):
            series = generate_uid()
            sops = []
            for position, instance_number in enumerate((3, None, 1, 3)):
                sop = generate_uid()
                attributes = {"SeriesNumber": number, "InstanceNumber": instance_number}
                catalog.add(
                    tenant,
                    make_instance(
                        study,
                        series,
                        sop,
                        Modality=modality,
                        **{k: v for k, v in attributes.items() if v is not None},
                    ),
                )
                sops.append((instance_number is None, instance_number or 0, position, sop))
            instance_order[series] = [sop for *_, sop in sorted(sops)]
            if modality == "CT":
                numbered.append((number is None, number or 0, index, series))
        # By number, absent last; equal numbers in the order indexed.
        series_order += [series for *_, series in sorted(numbered)]

    spec = FindQuery(tenant=tenant, level=Level.SERIES, match={"Modality": "CT"})
    assert _pages(catalog, spec, "0020000E", limit=2) == [series_order[0:2], series_order[2:4]]

    instances = FindQuery(
        tenant=tenant, level=Level.IMAGE, match={"StudyInstanceUID": studies[0], "Modality": "CT"}
    )
    expected = instance_order[series_order[0]] + instance_order[series_order[1]]
    assert _pages(catalog, instances, "00080018", limit=3) == [
        expected[0:3],
        expected[3:6],
        expected[6:8],
    ]

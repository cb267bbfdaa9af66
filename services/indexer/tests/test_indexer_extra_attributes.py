"""Operator-configured extra searchable attributes: matching, multi-values, backfill."""

from __future__ import annotations

import pytest
from indexer_helpers import Catalog, make_instance, values
from pacs_common.errors import InvalidArgumentError
from pacs_indexer.attributes import Level
from pacs_indexer.database import Database
from pacs_indexer.extra_attributes import ExtraAttributes, backfill
from pacs_indexer.query import FindQuery
from pydicom.uid import generate_uid

CONFIG = {
    "STUDY": ["InstitutionName"],
    "PATIENT": ["00101010"],  # PatientAge
    "SERIES": ["ProtocolName", "PerformedProcedureStepStartTime"],
    "IMAGE": ["ImageType"],
}


def _load(catalog: Catalog, tenant: str) -> dict[str, str]:
    general, other = generate_uid(), generate_uid()
    catalog.add(
        tenant,
        make_instance(
            general,
            InstitutionName="GENERAL HOSPITAL",
            PatientAge="042Y",
            ProtocolName="CHEST ROUTINE",
            PerformedProcedureStepStartTime="101500",
            ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
        ),
    )
    catalog.add(
        tenant,
        make_instance(
            other,
            InstitutionName="Other Clinic",
            ProtocolName="HEAD",
            ImageType=["DERIVED", "SECONDARY"],
        ),
    )
    return {"general": general, "other": other}


def _uids(catalog: Catalog, tenant: str, level: Level, **match: str) -> list[str]:
    fuzzy = match.pop("fuzzy", "") == "yes"
    result = catalog.find(FindQuery(tenant=tenant, level=level, match=match, fuzzy=fuzzy))
    return sorted(values(d, "0020000D")[0] for d in result.datasets)


def test_extra_attributes_are_matched_like_the_others(database: Database, tenant: str) -> None:
    catalog = Catalog(database, ExtraAttributes(CONFIG))
    studies = _load(catalog, tenant)
    assert _uids(catalog, tenant, Level.STUDY, InstitutionName="GEN*") == [studies["general"]]
    assert _uids(catalog, tenant, Level.STUDY, InstitutionName="Other Clinic") == [studies["other"]]
    assert _uids(catalog, tenant, Level.STUDY, PatientAge="042Y") == [studies["general"]]
    assert _uids(catalog, tenant, Level.STUDY, PatientAge='""') == [studies["other"]]
    assert _uids(catalog, tenant, Level.SERIES, ProtocolName="HEAD") == [studies["other"]]
    assert _uids(catalog, tenant, Level.SERIES, PerformedProcedureStepStartTime="1000-1100") == [
        studies["general"]
    ]
    # a multi-valued attribute matches on any of its values
    assert _uids(catalog, tenant, Level.IMAGE, ImageType="LOCALIZER") == [studies["general"]]
    both = sorted(studies.values())
    assert _uids(catalog, tenant, Level.IMAGE, ImageType="*") == both
    with pytest.raises(InvalidArgumentError, match="SERIES level"):
        catalog.find(FindQuery(tenant=tenant, level=Level.STUDY, match={"ProtocolName": "X"}))


def test_results_return_the_extra_attribute(database: Database, tenant: str) -> None:
    catalog = Catalog(database, ExtraAttributes(CONFIG))
    studies = _load(catalog, tenant)
    result = catalog.find(
        FindQuery(tenant=tenant, level=Level.STUDY, match={"InstitutionName": "GEN*"})
    )
    (study,) = result.datasets
    assert values(study, "0020000D") == [studies["general"]]
    assert values(study, "00080080") == ["GENERAL HOSPITAL"]


def test_attributes_configured_later_are_backfilled(database: Database, tenant: str) -> None:
    studies = _load(Catalog(database), tenant)  # indexed before the configuration
    extras = ExtraAttributes(CONFIG)
    configured = Catalog(database, extras)
    assert _uids(configured, tenant, Level.STUDY, InstitutionName="GEN*") == []
    with database.session() as session:
        assert backfill(session.connection(), extras) > 0
    with database.session() as session:
        assert backfill(session.connection(), extras) == 0  # once per attribute
    assert _uids(configured, tenant, Level.STUDY, InstitutionName="GEN*") == [studies["general"]]
    assert _uids(configured, tenant, Level.IMAGE, ImageType="LOCALIZER") == [studies["general"]]


@pytest.mark.parametrize(
    "config",
    [{"STUDY": ["PatientName"]}, {"WARD": ["InstitutionName"]}, {"STUDY": ["NoSuchThing"]}],
)
def test_bad_configuration_is_refused(config: dict[str, list[str]]) -> None:
    with pytest.raises(InvalidArgumentError):
        ExtraAttributes(config)

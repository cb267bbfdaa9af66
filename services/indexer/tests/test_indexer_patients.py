"""Patient update and merge as index operations, recorded in the merge history."""

from __future__ import annotations

import json

import pytest
from indexer_helpers import Catalog, make_instance, values
from pacs_common.errors import InvalidArgumentError, NotFoundError
from pacs_indexer.attributes import Level
from pacs_indexer.database import Database
from pacs_indexer.patients import merge_patients, update_patient
from pacs_indexer.query import FindQuery, instance_metadata
from pacs_indexer.schema import PatientMerge
from sqlalchemy import select


def _studies_of(catalog: Catalog, tenant: str, patient_id: str) -> list[dict[str, object]]:
    return catalog.find(
        FindQuery(
            tenant=tenant,
            level=Level.STUDY,
            match={"PatientID": patient_id},
            return_keys=["PatientName", "PatientBirthDate"],
        )
    ).datasets


def _header(database: Database, tenant: str, sop: str) -> dict[str, object]:
    with database.session() as session:
        return dict(json.loads(instance_metadata(session, tenant, "", "", sop)))


def test_update_corrects_demographics_and_headers(database: Database, tenant: str) -> None:
    catalog = Catalog(database)
    ds = make_instance(PatientID="U1", PatientName="SMTIH^JOHN", PatientBirthDate="19700101")
    catalog.add(tenant, ds)
    with database.session() as session:
        update_patient(session, tenant, "U1", name="SMITH^JOHN")
    (study,) = _studies_of(catalog, tenant, "U1")
    assert values(study, "00100010") == [{"Alphabetic": "SMITH^JOHN"}]
    assert values(study, "00100030") == ["19700101"]
    assert values(_header(database, tenant, ds.SOPInstanceUID), "00100010") == [
        {"Alphabetic": "SMITH^JOHN"}
    ]
    # a later image still carrying the old name neither reverts the patient nor its header
    late = make_instance(ds.StudyInstanceUID, PatientID="U1", PatientName="SMTIH^JOHN")
    catalog.add(tenant, late)
    (study,) = _studies_of(catalog, tenant, "U1")
    assert values(study, "00100010") == [{"Alphabetic": "SMITH^JOHN"}]
    assert values(_header(database, tenant, late.SOPInstanceUID), "00100010") == [
        {"Alphabetic": "SMITH^JOHN"}
    ]
    with database.session() as session:
        (entry,) = session.execute(
            select(PatientMerge).where(PatientMerge.tenant == tenant)
        ).scalars()
        assert entry.operation == "update"
        assert json.loads(entry.previous)["patient_name"] == "SMTIH^JOHN"


def test_merge_moves_studies_and_redirects_later_images(database: Database, tenant: str) -> None:
    catalog = Catalog(database)
    temporary = make_instance(PatientID="TEMP-7", PatientName="UNKNOWN^TRAUMA")
    catalog.add(tenant, temporary)
    catalog.add(tenant, make_instance(PatientID="MRN-1", PatientName="DOE^JANE"))
    with database.session() as session:
        moved = merge_patients(session, tenant, source=("TEMP-7", ""), target=("MRN-1", ""))
    assert moved == 1
    assert _studies_of(catalog, tenant, "TEMP-7") == []
    merged = _studies_of(catalog, tenant, "MRN-1")
    assert len(merged) == 2
    assert {values(s, "00100010")[0]["Alphabetic"] for s in merged} == {"DOE^JANE"}
    header = _header(database, tenant, temporary.SOPInstanceUID)
    assert values(header, "00100020") == ["MRN-1"]
    # the modality sends one more image under the temporary ID: it joins the merged patient
    catalog.add(
        tenant,
        make_instance(temporary.StudyInstanceUID, PatientID="TEMP-7", PatientName="UNKNOWN^TRAUMA"),
    )
    assert _studies_of(catalog, tenant, "TEMP-7") == []
    assert len(_studies_of(catalog, tenant, "MRN-1")) == 2
    with database.session() as session:
        history = session.execute(
            select(PatientMerge).where(PatientMerge.tenant == tenant)
        ).scalars()
        assert [(h.operation, h.studies_moved) for h in history] == [("merge", 1)]


def test_merge_into_a_patient_not_yet_indexed_renames(database: Database, tenant: str) -> None:
    catalog = Catalog(database)
    catalog.add(tenant, make_instance(PatientID="OLD", PatientName="A^B"))
    with database.session() as session:
        assert merge_patients(session, tenant, source=("OLD", ""), target=("NEW", "HOSP")) == 1
    (study,) = catalog.find(
        FindQuery(
            tenant=tenant, level=Level.STUDY, match={"PatientID": "NEW", "IssuerOfPatientID": ""}
        )
    ).datasets
    assert values(study, "00100021") == ["HOSP"]


def test_bad_merges_change_nothing(database: Database, tenant: str) -> None:
    with database.session() as session, pytest.raises(NotFoundError):
        merge_patients(session, tenant, source=("NOBODY", ""), target=("X", ""))
    with database.session() as session, pytest.raises(InvalidArgumentError):
        merge_patients(session, tenant, source=("X", ""), target=("X", ""))
    with database.session() as session, pytest.raises(NotFoundError):
        update_patient(session, tenant, "NOBODY", name="A")

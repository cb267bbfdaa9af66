"""IHE IOCM rejection notes in the index: a Key Object Selection titled with a CID 7011 code
hides the instances it references from queries (every level and the computed counts) and from
the stored metadata, whatever the order the note and the instances arrive in; the note itself
stays queryable; other KOS titles hide nothing. The notes are built with highdicom."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

import highdicom as hd
import pytest
from indexer_helpers import Catalog, kos, make_instance, values
from pacs_common.errors import InvalidArgumentError, NotFoundError
from pacs_indexer.attributes import Level
from pacs_indexer.indexing import upsert_instances
from pacs_indexer.query import FindQuery, instance_metadata, study_metadata_page
from pacs_indexer.rejection import KEY_OBJECT_SELECTION
from pacs_indexer.schema import RejectedInstance
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from sqlalchemy import select

PATIENT = {
    "PatientID": "IOCM-1",
    "PatientName": "Reject^Test",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
    "StudyDate": "20260101",
    "StudyTime": "120000",
    "StudyID": "1",
    "AccessionNumber": "A1",
    "ReferringPhysicianName": "",
    "Manufacturer": "test",
}


def _tenant() -> str:
    return f"iocm-{uuid.uuid4().hex[:8]}"


def _study(n_series: int = 2, per_series: int = 3) -> list[Dataset]:
    study = generate_uid()
    datasets = []
    for s in range(n_series):
        series = generate_uid()
        for i in range(per_series):
            datasets.append(
                make_instance(study, series, SeriesNumber=s + 1, InstanceNumber=i + 1, **PATIENT)
            )
    return datasets


def _sops(catalog: Catalog, tenant: str, study: str) -> set[str]:
    found = catalog.find(FindQuery(tenant, Level.IMAGE, {"StudyInstanceUID": study}))
    return {values(d, "00080018")[0] for d in found.datasets}


def _study_counts(catalog: Catalog, tenant: str, study: str) -> tuple[int, int]:
    found = catalog.find(
        FindQuery(
            tenant,
            Level.STUDY,
            {"StudyInstanceUID": study},
            return_keys=["NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"],
        )
    )
    (dataset,) = found.datasets
    return values(dataset, "00201206")[0], values(dataset, "00201208")[0]


def _series_counts(catalog: Catalog, tenant: str, study: str) -> dict[str, int]:
    found = catalog.find(
        FindQuery(
            tenant,
            Level.SERIES,
            {"StudyInstanceUID": study},
            return_keys=["NumberOfSeriesRelatedInstances"],
        )
    )
    return {values(d, "0020000E")[0]: values(d, "00201209")[0] for d in found.datasets}


@pytest.mark.parametrize("note_first", [False, True], ids=["note-after", "note-before"])
def test_rejection_note_hides_what_it_references(catalog: Catalog, note_first: bool) -> None:
    tenant = _tenant()
    instances = _study()
    study = instances[0].StudyInstanceUID
    rejected = instances[:2]  # two of the first series' three
    note = kos(rejected)
    if note_first:
        catalog.add(tenant, note)
        catalog.add_many(tenant, instances)
    else:
        catalog.add_many(tenant, instances)
        assert len(_sops(catalog, tenant, study)) == 6
        catalog.add(tenant, note)

    kept = {ds.SOPInstanceUID for ds in instances[2:]}
    assert _sops(catalog, tenant, study) == kept | {note.SOPInstanceUID}
    # Two image series (one left with 1 instance, one with 3) plus the note's series.
    assert _study_counts(catalog, tenant, study) == (3, 5)
    counts = _series_counts(catalog, tenant, study)
    assert counts[instances[0].SeriesInstanceUID] == 1
    assert counts[instances[3].SeriesInstanceUID] == 3
    assert counts[note.SeriesInstanceUID] == 1
    with catalog.database.session() as session:
        for ds in rejected:
            with pytest.raises(NotFoundError):
                instance_metadata(session, tenant, "", "", ds.SOPInstanceUID)
        page = study_metadata_page(session, tenant, study, "", offset=0, limit=100)
    shown = {values(json.loads(text), "00080018")[0] for text in page}
    assert shown == kept | {note.SOPInstanceUID}


def test_the_note_is_queryable_as_a_ko_instance(catalog: Catalog) -> None:
    tenant = _tenant()
    instances = _study(1, 2)
    catalog.add_many(tenant, instances)
    note = kos(instances[:1], codes.DCM.DataRetentionPolicyExpired)
    catalog.add(tenant, note)
    found = catalog.find(
        FindQuery(tenant, Level.IMAGE, {"SOPClassUID": KEY_OBJECT_SELECTION}, ["Modality"])
    )
    (dataset,) = found.datasets
    assert values(dataset, "00080018") == [note.SOPInstanceUID]
    assert values(dataset, "00080060") == ["KO"]


def test_a_whole_rejected_series_disappears(catalog: Catalog) -> None:
    tenant = _tenant()
    instances = _study(2, 2)
    catalog.add_many(tenant, instances)
    catalog.add(tenant, kos(instances[:2], codes.DCM.RejectedForPatientSafetyReasons))
    study = instances[0].StudyInstanceUID
    assert instances[0].SeriesInstanceUID not in _series_counts(catalog, tenant, study)
    assert _study_counts(catalog, tenant, study) == (2, 3)


@pytest.mark.parametrize(
    "title",
    [
        codes.DCM.RejectedForQualityReasons,
        codes.DCM.RejectedForPatientSafetyReasons,
        codes.DCM.IncorrectModalityWorklistEntry,
        codes.DCM.DataRetentionPolicyExpired,
    ],
    ids=lambda c: c.value,
)
def test_each_rejection_title_rejects(catalog: Catalog, title: hd.sr.CodedConcept) -> None:
    tenant = _tenant()
    instances = _study(1, 2)
    catalog.add_many(tenant, [*instances, kos(instances[:1], title)])
    assert instances[0].SOPInstanceUID not in _sops(catalog, tenant, instances[0].StudyInstanceUID)


def test_other_kos_titles_hide_nothing(catalog: Catalog) -> None:
    tenant = _tenant()
    instances = _study(1, 3)
    note = kos(instances[:2], codes.DCM.OfInterest)  # (113000, DCM, "Of Interest")
    catalog.add_many(tenant, [*instances, note])
    study = instances[0].StudyInstanceUID
    assert _sops(catalog, tenant, study) == {ds.SOPInstanceUID for ds in [*instances, note]}
    with catalog.database.session() as session:
        stmt = select(RejectedInstance).where(RejectedInstance.tenant == tenant)
        assert not session.execute(stmt).scalars().all()


def test_redelivery_and_resending_change_nothing(catalog: Catalog) -> None:
    tenant = _tenant()
    instances = _study(1, 3)
    note = kos(instances[:2])
    catalog.add_many(tenant, [*instances, note])
    catalog.add(tenant, note)  # the note redelivered
    catalog.add_many(tenant, instances)  # the rejected instances sent again
    study = instances[0].StudyInstanceUID
    assert _sops(catalog, tenant, study) == {instances[2].SOPInstanceUID, note.SOPInstanceUID}
    assert _study_counts(catalog, tenant, study) == (2, 2)
    with catalog.database.session() as session:
        rows = session.execute(
            select(RejectedInstance).where(RejectedInstance.tenant == tenant)
        ).scalars()
        rejected = {row.sop_instance_uid: row for row in rows}
    assert set(rejected) == {ds.SOPInstanceUID for ds in instances[:2]}
    for row in rejected.values():
        assert row.reason_code == "113001"
        assert row.note_sop_instance_uid == note.SOPInstanceUID
        assert row.stored_time  # seen in storage: the deletion policy applies to it
        assert row.patient_id == "IOCM-1"


def test_rejection_stays_inside_its_tenant(catalog: Catalog) -> None:
    tenant, other = _tenant(), _tenant()
    instances = _study(1, 2)
    catalog.add_many(tenant, instances)
    catalog.add_many(other, instances)
    catalog.add(tenant, kos(instances[:1]))
    study = instances[0].StudyInstanceUID
    assert len(_sops(catalog, tenant, study)) == 2  # one image and the note
    assert len(_sops(catalog, other, study)) == 2  # both images


def test_an_unreadable_note_is_refused_and_changes_nothing(catalog: Catalog) -> None:
    tenant = _tenant()
    instances = _study(1, 2)
    catalog.add_many(tenant, instances)
    note = kos(instances[:1])
    record = catalog._record(tenant, note, "")
    broken = replace(record, dicom_json='{"0040A043": {"vr": "SQ", "Value": ["x"]}}')
    with pytest.raises(InvalidArgumentError), catalog.database.session() as session:
        upsert_instances(session, [broken])
    study = instances[0].StudyInstanceUID
    assert _sops(catalog, tenant, study) == {ds.SOPInstanceUID for ds in instances}

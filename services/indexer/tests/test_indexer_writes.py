"""The index writer: idempotent upserts, computed counts, versions, deletions, tenants."""

from __future__ import annotations

from indexer_helpers import Catalog, make_instance, values
from pacs_indexer.attributes import Level
from pacs_indexer.database import Database
from pacs_indexer.indexing import delete_instance
from pacs_indexer.query import FindQuery
from pydicom.uid import generate_uid

STUDY_COUNTS = ["NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"]


def _study(catalog: Catalog, tenant: str, uid: str) -> dict[str, object]:
    result = catalog.find(
        FindQuery(tenant=tenant, level=Level.STUDY, match={"StudyInstanceUID": uid})
    )
    assert result.total_count == 1
    return result.datasets[0]


def test_redelivered_instance_changes_nothing(catalog: Catalog, tenant: str) -> None:
    ds = make_instance(PatientName="DOE^JOHN", PatientID="P1")
    assert catalog.add(tenant, ds)
    catalog.add(tenant, ds)
    catalog.add(tenant, ds)
    study = _study(catalog, tenant, ds.StudyInstanceUID)
    assert values(study, "00201206") == [1]  # NumberOfStudyRelatedSeries
    assert values(study, "00201208") == [1]  # NumberOfStudyRelatedInstances


def test_counts_and_modalities_follow_the_series(catalog: Catalog, tenant: str) -> None:
    study, ct, mr = generate_uid(), generate_uid(), generate_uid()
    for _ in range(3):
        catalog.add(tenant, make_instance(study, ct, Modality="CT"))
    for _ in range(2):
        catalog.add(tenant, make_instance(study, mr, Modality="MR"))
    result = _study(catalog, tenant, study)
    assert values(result, "00080061") == ["CT", "MR"]  # ModalitiesInStudy
    assert values(result, "00201206") == [2]
    assert values(result, "00201208") == [5]
    series = catalog.find(
        FindQuery(tenant=tenant, level=Level.SERIES, match={"StudyInstanceUID": study})
    )
    counts = {values(d, "0020000E")[0]: values(d, "00201209")[0] for d in series.datasets}
    assert counts == {ct: 3, mr: 2}


def test_deleting_instances_recomputes_and_removes_empty_levels(
    catalog: Catalog, tenant: str
) -> None:
    study, series = generate_uid(), generate_uid()
    first = make_instance(study, series, PatientID="P1")
    second = make_instance(study, series, PatientID="P1")
    catalog.add(tenant, first)
    catalog.add(tenant, second)
    assert catalog.delete(tenant, first.SOPInstanceUID)
    assert values(_study(catalog, tenant, study), "00201208") == [1]
    assert catalog.delete(tenant, second.SOPInstanceUID)
    assert not catalog.delete(tenant, second.SOPInstanceUID)
    gone = catalog.find(FindQuery(tenant=tenant, level=Level.STUDY))
    assert gone.total_count == 0


def test_later_version_wins_whatever_the_order(catalog: Catalog, tenant: str) -> None:
    sop, study = generate_uid(), generate_uid()
    old = make_instance(study, sop=sop, StudyDescription="OLD")
    new = make_instance(study, sop=sop, StudyDescription="NEW")
    catalog.add(tenant, new, stored_time="2024-05-01T10:00:00.500Z")
    assert catalog.add(tenant, old, stored_time="2024-05-01T10:00:00Z") == []
    result = _study(catalog, tenant, study)
    assert values(result, "00081030") == []  # not asked for: not returned with a value
    described = catalog.find(
        FindQuery(
            tenant=tenant,
            level=Level.STUDY,
            match={"StudyInstanceUID": study},
            return_keys=["StudyDescription"],
        )
    )
    assert values(described.datasets[0], "00081030") == ["NEW"]


def test_instance_moved_to_another_series_leaves_no_empty_series(
    catalog: Catalog, tenant: str
) -> None:
    study, sop = generate_uid(), generate_uid()
    first_series, second_series = generate_uid(), generate_uid()
    catalog.add(tenant, make_instance(study, first_series, sop), stored_time="2024-01-01T00:00:00Z")
    catalog.add(
        tenant, make_instance(study, second_series, sop), stored_time="2024-01-02T00:00:00Z"
    )
    series = catalog.find(
        FindQuery(tenant=tenant, level=Level.SERIES, match={"StudyInstanceUID": study})
    )
    assert [values(d, "0020000E") for d in series.datasets] == [[second_series]]
    assert values(_study(catalog, tenant, study), "00201206") == [1]


def test_tenants_never_see_each_other(catalog: Catalog, tenant: str) -> None:
    other = f"{tenant}x"
    ds = make_instance(PatientName="SHARED^NAME")
    catalog.add(tenant, ds)
    catalog.add(other, ds)
    catalog.delete(other, ds.SOPInstanceUID)
    mine = catalog.find(FindQuery(tenant=tenant, level=Level.IMAGE))
    theirs = catalog.find(FindQuery(tenant=other, level=Level.IMAGE))
    assert mine.total_count == 1
    assert theirs.total_count == 0


def test_patients_without_id_are_kept_apart(catalog: Catalog, tenant: str) -> None:
    catalog.add(tenant, make_instance(PatientName="ANON^ONE"))
    catalog.add(tenant, make_instance(PatientName="ANON^TWO"))
    result = catalog.find(FindQuery(tenant=tenant, level=Level.STUDY, return_keys=["PatientName"]))
    names = sorted(values(d, "00100010")[0]["Alphabetic"] for d in result.datasets)
    assert names == ["ANON^ONE", "ANON^TWO"]


def test_late_store_event_does_not_resurrect_a_deleted_instance(
    catalog: Catalog, tenant: str
) -> None:
    ds = make_instance()
    catalog.add(tenant, ds, stored_time="2024-03-01T08:00:00Z")
    with catalog.database.session() as session:
        assert delete_instance(session, tenant, ds.SOPInstanceUID, "2024-03-01T09:00:00Z")
    # the same store event, redelivered after the deletion: stays deleted
    assert catalog.add(tenant, ds, stored_time="2024-03-01T08:00:00Z") == []
    assert catalog.find(FindQuery(tenant=tenant, level=Level.IMAGE)).total_count == 0
    # stored again after the deletion: indexed again
    assert catalog.add(tenant, ds, stored_time="2024-03-01T10:00:00Z")
    assert catalog.find(FindQuery(tenant=tenant, level=Level.IMAGE)).total_count == 1


def test_events_in_any_order_end_in_the_same_index(database: Database, tenant: str) -> None:
    study, ct, mr = generate_uid(), generate_uid(), generate_uid()
    headers = [
        make_instance(study, ct, PatientID="P9", StudyDescription="HEAD", InstanceNumber=1),
        make_instance(study, ct, PatientID="P9", InstanceNumber=2),  # description left out
        make_instance(study, mr, PatientID="P9", Modality="MR", StudyDescription="HEAD"),
    ]
    answers = []
    for order, suffix in (([0, 1, 2], "a"), ([2, 1, 0], "b")):
        catalog = Catalog(database)
        for index in order:
            catalog.add(tenant + suffix, headers[index])
        study_result = catalog.find(
            FindQuery(
                tenant=tenant + suffix,
                level=Level.STUDY,
                return_keys=["StudyDescription", "PatientID"],
            )
        )
        answers.append(study_result.datasets)
    assert answers[0] == answers[1]
    assert values(answers[0][0], "00081030") == ["HEAD"]
    assert values(answers[0][0], "00080061") == ["CT", "MR"]


def test_one_batch_ends_as_its_instances_one_by_one(database: Database, tenant: str) -> None:
    # An instance that leaves an attribute out does not blank what an earlier one of its study
    # set, whether they come in one batch or one after the other.
    study, series = generate_uid(), generate_uid()
    described = make_instance(study, series, PatientID="P1", StudyDescription="HEAD CT")
    undescribed = make_instance(study, series, PatientID="P1")
    batched = Catalog(database)
    batched.add_many(tenant, [described, undescribed])
    one_by_one = Catalog(database)
    other = f"{tenant}-1by1"
    one_by_one.add(other, described)
    one_by_one.add(other, undescribed)
    for name in (tenant, other):
        found = batched.find(
            FindQuery(
                tenant=name,
                level=Level.STUDY,
                match={"StudyInstanceUID": study},
                return_keys=["StudyDescription"],
            )
        )
        result = found.datasets[0]
        assert values(result, "00081030") == ["HEAD CT"]  # StudyDescription
        assert values(result, "00201208") == [2]

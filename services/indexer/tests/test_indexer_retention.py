"""Retention selection and legal holds in the index, on SQLite and PostgreSQL: which studies
a rule makes due (adult, pediatric by age at the study, unknown age), which holds cover them,
and that the selection stays inside the tenant. The deletion itself is tested end to end in
``tests/e2e/test_lifecycle.py``."""

from __future__ import annotations

from datetime import date

import pytest
from indexer_helpers import Catalog, make_instance
from pacs_common.errors import InvalidArgumentError
from pacs_indexer import lifecycle
from pacs_indexer.database import Database
from pacs_indexer.retention import RetentionRule, due_studies, rule_for, years_before

AS_OF = date(2026, 6, 15)
RULE = RetentionRule(years=10, pediatric_years=25)


def _study(
    catalog: Catalog, tenant: str, patient: str, birth: str, study_date: str, **extra: str
) -> str:
    dataset = make_instance(
        PatientID=patient, PatientBirthDate=birth, StudyDate=study_date, **extra
    )
    catalog.add(tenant, dataset)
    return str(dataset.StudyInstanceUID)


def _due(
    database: Database, tenant: str, rule: RetentionRule = RULE
) -> dict[str, tuple[str, bool]]:
    return {
        d.study_instance_uid: (d.rule, d.held) for d in due_studies(database, tenant, rule, AS_OF)
    }


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")  # the malformed birth date
def test_adult_pediatric_and_unknown_age_studies_are_due_by_their_own_period(
    catalog: Catalog, database: Database, tenant: str
) -> None:
    adult_old = _study(catalog, tenant, "A1", "19600101", "20100101")
    adult_recent = _study(catalog, tenant, "A2", "19600101", "20200101")
    child_recent = _study(catalog, tenant, "C1", "20000301", "20100101")  # 9 at the study
    child_old = _study(catalog, tenant, "C2", "19800101", "19950101")  # 15, 31 years ago
    # Born 16 June 1990: 17 on 15 June 2008 (a child), 18 on 16 June 2008 (an adult).
    eve_of_18 = _study(catalog, tenant, "E1", "19900616", "20080615")
    day_of_18 = _study(catalog, tenant, "E2", "19900616", "20080616")
    unknown_recent = _study(catalog, tenant, "U1", "", "20050101")
    unknown_old = _study(catalog, tenant, "U2", "", "20000101")
    no_date = _study(catalog, tenant, "N1", "19600101", "")
    bad_birth = _study(catalog, tenant, "B1", "1960-01-01", "20050101")
    _study(catalog, f"{tenant}x", "O1", "19600101", "19900101")  # another tenant's

    due = _due(database, tenant)

    assert due == {
        adult_old: ("adult", False),
        child_old: ("pediatric", False),
        day_of_18: ("adult", False),
        unknown_old: ("unknown-age", False),
    }
    for kept in (adult_recent, child_recent, eve_of_18, unknown_recent, no_date, bad_birth):
        assert kept not in due
    assert [d.study_instance_uid for d in due_studies(database, tenant, RULE, AS_OF)] == [
        child_old,
        unknown_old,
        day_of_18,
        adult_old,
    ], "oldest first"


def test_held_studies_are_reported_as_held(
    catalog: Catalog, database: Database, tenant: str
) -> None:
    by_study = _study(catalog, tenant, "H1", "19600101", "20000101")
    by_patient = _study(catalog, tenant, "H2", "19600101", "20000101", IssuerOfPatientID="SITE-A")
    other_issuer = _study(catalog, tenant, "H3", "19600101", "20000101", IssuerOfPatientID="SITE-B")
    free = _study(catalog, tenant, "H4", "19600101", "20000101")
    lifecycle.set_hold(database, tenant, lifecycle.Hold(lifecycle.STUDY, by_study, reason="case 1"))
    lifecycle.set_hold(database, tenant, lifecycle.Hold(lifecycle.PATIENT, "H2"))
    lifecycle.set_hold(database, tenant, lifecycle.Hold(lifecycle.PATIENT, "H3", "SITE-A"))
    # A hold in another tenant on the same patient covers nothing here.
    lifecycle.set_hold(database, f"{tenant}x", lifecycle.Hold(lifecycle.PATIENT, "H4"))

    due = _due(database, tenant)

    assert due[by_study] == ("adult", True)
    assert due[by_patient] == ("adult", True)
    assert due[other_issuer] == ("adult", False), "a hold naming an issuer covers that issuer"
    assert due[free] == ("adult", False)


def test_without_a_pediatric_period_every_study_uses_the_one_period(
    catalog: Catalog, database: Database, tenant: str
) -> None:
    child = _study(catalog, tenant, "C1", "20000101", "20100101")
    rule = RetentionRule(years=15)

    assert _due(database, tenant, rule) == {child: ("pediatric", False)}
    assert rule_for({"*": rule}, tenant) == rule
    assert rule_for({tenant: RULE, "*": rule}, tenant) == RULE
    assert rule_for({}, tenant) is None


def test_cutoffs_on_29_february() -> None:
    assert years_before(date(2024, 2, 29), 10) == "20140228"
    assert years_before(date(2026, 6, 15), 25) == "20010615"


def test_legal_holds_are_set_once_listed_and_released(database: Database, tenant: str) -> None:
    hold = lifecycle.Hold(lifecycle.PATIENT, "P-1", "SITE", reason="litigation 7", set_by="op")

    stored, created = lifecycle.set_hold(database, tenant, hold)
    again, created_again = lifecycle.set_hold(
        database, tenant, lifecycle.Hold(lifecycle.PATIENT, "P-1", "SITE", reason="updated")
    )
    listed = lifecycle.list_holds(database, tenant)
    released = lifecycle.release_hold(database, tenant, hold)
    released_again = lifecycle.release_hold(database, tenant, hold)

    assert created and not created_again
    assert stored.set_time and stored.set_by == "op"
    assert [h.reason for h in listed] == ["updated"]
    assert again.set_time == stored.set_time
    assert released and not released_again
    assert lifecycle.list_holds(database, tenant) == []


@pytest.mark.parametrize(
    "hold",
    [
        lifecycle.Hold("SERIES", "1.2.3"),
        lifecycle.Hold(lifecycle.PATIENT, "  "),
        lifecycle.Hold(lifecycle.STUDY, "not-a-uid"),
        lifecycle.Hold(lifecycle.STUDY, "1.2.3", issuer="SITE"),
    ],
)
def test_malformed_holds_are_refused_and_change_nothing(
    database: Database, tenant: str, hold: lifecycle.Hold
) -> None:
    with pytest.raises(InvalidArgumentError):
        lifecycle.set_hold(database, tenant, hold)
    assert lifecycle.list_holds(database, tenant) == []


@pytest.mark.parametrize(
    "target",
    [
        lifecycle.Target("Bad Tenant", "1.2.3"),
        lifecycle.Target("t1", ""),
        lifecycle.Target("t1", "1.2.abc"),
        lifecycle.Target("t1", "1.2.3", series_instance_uid="01.2"),
        lifecycle.Target("t1", "1.2.3", sop_instance_uid="1..2"),
    ],
)
def test_malformed_deletion_targets_are_refused(target: lifecycle.Target) -> None:
    """Checked before anything is read or deleted (the servicer answers INVALID_ARGUMENT)."""
    with pytest.raises(InvalidArgumentError):
        target.check()


def test_a_hold_refusal_names_the_hold_and_what_to_do() -> None:
    error = lifecycle.refusal(
        lifecycle.Target("t1", "1.2.3"),
        [lifecycle.Hold(lifecycle.PATIENT, "P-1", reason="litigation 42")],
    )
    assert "1.2.3 is under legal hold: patient P-1 (litigation 42)" in error.message
    assert "nothing was deleted" in error.message and "pacs hold release" in error.message
